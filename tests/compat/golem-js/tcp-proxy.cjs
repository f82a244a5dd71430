// golem-js 3.6 examples/rental-model/advanced/tcp-proxy, unmodified in its use
// of the SDK: `createNetwork`, `oneOf` with the network and the `vpn`
// capability, `uploadFile`, `runAndStream` of a server, `createTcpProxy` +
// `listen` on a local port, then the example's shutdown routine (`proxy.close`,
// `rental.stopAndFinalize`) and `disconnect`.
//
// Differences from the example, in the image and the server only: the suite's
// busybox image (COMPAT_IMAGE_URL / COMPAT_IMAGE_HASH) with busybox `httpd -f`
// serving an uploaded page instead of `node server.js`, on 8080 instead of 80
// (the container runs as uid 65534); instead of waiting for SIGINT, the
// program sends the HTTP GET itself (the example's `curl localhost:8080`,
// retried while the server is still binding) and then runs the SIGINT handler's
// routine, after which, as in the example, it waits for the server's stream to
// end (`waitFor(() => server.isFinished())`). Payment as basic.cjs (YAGNA_PAYMENT_DRIVER / _NETWORK when set).
// Prints the page between PAGE> markers and "TCP PROXY OK"; exits 1 on failure.
const fs = require("fs");
const http = require("http");
const net = require("net");
const os = require("os");
const path = require("path");
const { GolemNetwork, waitFor } = require("@golem-sdk/golem-js");

const PAGE = "Hello Golem!";

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function get(url) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent: false }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode, body }));
      response.on("error", reject);
    });
    request.setTimeout(20000, () => request.destroy(new Error("GET timed out")));
    request.on("error", reject);
  });
}

async function main() {
  const options = {};
  if (process.env.YAGNA_PAYMENT_DRIVER) {
    options.payment = { driver: process.env.YAGNA_PAYMENT_DRIVER, network: process.env.YAGNA_PAYMENT_NETWORK };
  }
  const glm = new GolemNetwork(options);
  let failed = false;
  try {
    await glm.connect();

    const network = await glm.createNetwork({
      ip: "10.0.0.0/24",
    });

    const rental = await glm.oneOf({
      order: {
        demand: {
          workload: {
            imageUrl: process.env.COMPAT_IMAGE_URL,
            imageHash: process.env.COMPAT_IMAGE_HASH,
            capabilities: ["vpn"],
          },
        },
        market: {
          rentHours: 0.25,
          pricing: { model: "linear", maxStartPrice: 1, maxCpuPerHourPrice: 10, maxEnvPerHourPrice: 10 },
        },
        network,
      },
    });

    const PORT_ON_PROVIDER = 8080;
    const PORT_ON_REQUESTOR = await freePort();

    const exe = await rental.getExeUnit();

    // Install the page (the example installs its server script)
    const local = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tcp-proxy-")), "index.html");
    fs.writeFileSync(local, `${PAGE}\n`);
    await exe.uploadFile(local, "/golem/work/index.html");

    // Start the server process on the provider
    const server = await exe.runAndStream(`httpd -f -v -p ${PORT_ON_PROVIDER} -h /golem/work`);

    server.stdout.subscribe((data) => console.log("provider>", data));
    server.stderr.subscribe((data) => console.error("provider>", data));

    // Create a proxy instance
    const proxy = exe.createTcpProxy(PORT_ON_PROVIDER);
    proxy.events.on("error", (error) => console.error("TcpProxy reported an error:", error));

    // Start listening and expose the port on your requestor machine
    await proxy.listen(PORT_ON_REQUESTOR);
    console.log(`Server Proxy listen at http://localhost:${PORT_ON_REQUESTOR}`);

    let response;
    let lastError;
    for (let attempt = 0; attempt < 10 && !response; attempt++) {
      try {
        response = await get(`http://127.0.0.1:${PORT_ON_REQUESTOR}/`);
      } catch (error) {
        lastError = error;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
    if (!response) throw new Error(`GET through the proxy failed: ${lastError}`);
    console.log(`PAGE>${response.status} ${response.body.trim()}<PAGE`);
    if (response.status !== 200 || response.body.trim() !== PAGE) {
      throw new Error(`unexpected page: ${JSON.stringify(response)}`);
    }

    // The example's SIGINT handler ...
    console.log("Shutting down gracefully");
    await proxy.close();
    await rental.stopAndFinalize();
    // ... after which the example's main flow ends once the server's stream does
    // (bounded here, unbounded in the example).
    await waitFor(() => server.isFinished(), { abortSignal: AbortSignal.timeout(30000) });
    console.log("TCP PROXY OK");
  } catch (error) {
    failed = true;
    console.error("Failed to run the example", error);
  } finally {
    await glm.disconnect();
  }
  process.exit(failed ? 1 : 0);
}

main();
