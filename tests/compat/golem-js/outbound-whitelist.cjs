// golem-js 3.6 examples/rental-model/advanced/outbound/whitelist
// (read-golem-js-releases.ts), unmodified in its use of the SDK: a workload
// whose demand carries an unsigned payload manifest (base64) naming the one
// URL the container may reach, which the provider admits under its
// `everyone: whitelist` outbound rule; `oneOf` with an abort-signal timeout,
// `exe.run` of an HTTP GET of that URL, `result.getOutputAsJson()`,
// `stopAndFinalize`, `disconnect`.
//
// Differences from the example, none in the SDK calls' shape:
// - the image: the suite's busybox one by `imageUrl` + `imageHash` (no image
//   registry is reachable for `imageTag: "golem/node:latest"`), and the
//   manifest's `payload` names that image;
// - the URL: the manifest allows `http://<COMPAT_OUTBOUND_HOST>:<port>`, an
//   HTTP server run.sh starts on the Docker bridge's host address, whose name
//   the provider maps (`outbound-hosts`) and whitelists (`golem-provider
//   whitelist add`), instead of https://registry.npmjs.org; busybox `wget`
//   fetches its dist-tags JSON instead of `curl`; the manifest's `expiresAt`
//   is in 2100 (the original's has passed);
// - the payment: YAGNA_PAYMENT_DRIVER / _NETWORK passed as the SDK's `payment`
//   option when set (sdk-options.cjs, as every compat program); no
//   pino-pretty logger;
// - one command more, after the example's: the same GET on another port of
//   the same host (COMPAT_OUTBOUND_DENIED_URL, a second server run.sh starts
//   with the same file), which the manifest does not name, must fail: the
//   container reaches its manifest's URL through the provider's enforcement,
//   not through an open bridge;
// - failures exit 1 (the example only logs them), and the program prints
//   "OUTBOUND OK" when the JSON it read is the one served and the other port
//   stayed shut.
const { GolemNetwork } = require("@golem-sdk/golem-js");
const { sdkOptions } = require("./sdk-options.cjs");

const host = process.env.COMPAT_OUTBOUND_HOST;
const url = process.env.COMPAT_OUTBOUND_URL; // http://<host>:<port>
const deniedUrl = process.env.COMPAT_OUTBOUND_DENIED_URL; // same host, a port not in the manifest
const expectedTags = JSON.parse(process.env.COMPAT_OUTBOUND_JSON);
const tagsPath = "/-/package/@golem-sdk/golem-js/dist-tags";

const manifest = {
  version: "0.1.0",
  createdAt: new Date().toISOString(),
  expiresAt: "2100-01-01T00:00:00.000Z",
  metadata: { name: "outbound-example-project", version: "1.0.0" },
  payload: [
    {
      platform: { os: "linux", arch: "x86_64" },
      hash: `sha3:${process.env.COMPAT_IMAGE_HASH}`,
      urls: [process.env.COMPAT_IMAGE_URL],
    },
  ],
  compManifest: {
    version: "0.1.0",
    net: { inet: { out: { urls: [url], protocols: ["http"] } } },
  },
};

async function main() {
  const glm = new GolemNetwork(sdkOptions());
  let failed = false;
  try {
    await glm.connect();

    const timeoutSignal = AbortSignal.timeout(120_000);
    const onTimeout = () => console.log("Reached timeout, no one wanted to collaborate");
    timeoutSignal.addEventListener("abort", onTimeout);

    const rental = await glm.oneOf({
      order: {
        demand: {
          workload: {
            imageUrl: process.env.COMPAT_IMAGE_URL,
            imageHash: process.env.COMPAT_IMAGE_HASH,
            manifest: Buffer.from(JSON.stringify(manifest)).toString("base64"),
          },
        },
        market: {
          rentHours: 15 / 60,
          pricing: {
            model: "burn-rate",
            avgGlmPerHour: 1,
          },
        },
      },
      signalOrTimeout: timeoutSignal,
    });

    timeoutSignal.removeEventListener("abort", onTimeout);

    const exe = await rental.getExeUnit();
    const result = await exe.run(`wget -q -O - ${url}${tagsPath}`);

    const tags = result.getOutputAsJson();
    console.log("golem-js release tags:", tags);

    const denied = await exe.run(`timeout 5 wget -q -O - ${deniedUrl}${tagsPath}`);
    console.log(`not in the manifest (${deniedUrl}): ${denied.result} ${denied.message || ""} ${denied.stdout || ""}`);

    await rental.stopAndFinalize();

    if (JSON.stringify(tags) !== JSON.stringify(expectedTags)) {
      throw new Error(`read ${JSON.stringify(tags)} from ${host}, expected ${JSON.stringify(expectedTags)}`);
    }
    if (denied.result !== "Error") {
      throw new Error(`the container reached ${deniedUrl}, which its manifest does not name`);
    }
    console.log("OUTBOUND OK");
  } catch (err) {
    console.error(err);
    failed = true;
  } finally {
    await glm.disconnect();
  }
  process.exit(failed ? 1 : 0);
}

main();
