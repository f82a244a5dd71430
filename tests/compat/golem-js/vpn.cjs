// golem-js 3.6 examples/rental-model/basic/vpn.ts, unmodified in its use of
// the SDK: `createNetwork`, `manyOf` (poolSize 2) with the network and the
// `vpn` capability, two `acquire`s, `getExeUnit`, `exe.run` and `getIp` on
// both, `pool.destroy` of both rentals, `destroyNetwork`, `disconnect`.
//
// Differences from the example, in the commands only: busybox `ping` needs a
// raw socket or a ping group the container user (uid 65534, no capabilities)
// does not have, so each provider instead reaches the other over TCP with
// busybox `nc`: the one side starts a listener that answers every connection
// with "hello from <its IP>" (in the background, so `run` returns), the other
// connects to it (retried while the listener is still starting) and prints what
// it got; both directions, as the example pings both ways. The suite's busybox
// image (COMPAT_IMAGE_URL / COMPAT_IMAGE_HASH); payment as basic.cjs.
// Prints each answer between REPLY> markers and "VPN OK"; exits 1 on failure.
const { GolemNetwork } = require("@golem-sdk/golem-js");
const { sdkOptions } = require("./sdk-options.cjs");

const PORT = 5000;

function listen(exe) {
  return `nc -l -p ${PORT} -e echo hello from ${exe.getIp()} </dev/null >/dev/null 2>&1 &`;
}

function connect(exe) {
  return `for i in 1 2 3 4 5 6 7 8 9 10; do nc -w 5 ${exe.getIp()} ${PORT} </dev/null && exit 0; sleep 1; done; exit 1`;
}

async function main() {
  const glm = new GolemNetwork(sdkOptions());
  let failed = false;
  try {
    await glm.connect();
    const network = await glm.createNetwork({ ip: "192.168.7.0/24" });
    const order = {
      demand: {
        workload: {
          imageUrl: process.env.COMPAT_IMAGE_URL,
          imageHash: process.env.COMPAT_IMAGE_HASH,
          capabilities: ["vpn"],
        },
      },
      market: {
        rentHours: 0.5,
        pricing: { model: "linear", maxStartPrice: 1, maxCpuPerHourPrice: 10, maxEnvPerHourPrice: 10 },
      },
      network,
    };
    // create a pool that can grow up to 2 rentals at the same time
    const pool = await glm.manyOf({
      poolSize: 2,
      order,
    });
    const rental1 = await pool.acquire();
    const rental2 = await pool.acquire();
    const exe1 = await rental1.getExeUnit();
    const exe2 = await rental2.getExeUnit();
    const replies = [];
    for (const [from, to] of [
      [exe1, exe2],
      [exe2, exe1],
    ]) {
      const listener = await to.run(listen(to));
      if (listener.result !== "Ok") throw new Error(`listener failed: ${JSON.stringify(listener)}`);
      const res = await from.run(connect(to));
      console.log(`Response from provider: ${from.provider.name} (ip: ${from.getIp()})`, res.stdout);
      console.log(`REPLY>${String(res.stdout).trim()}<REPLY`);
      if (res.result !== "Ok") throw new Error(`nc from ${from.getIp()} failed: ${JSON.stringify(res)}`);
      replies.push([String(res.stdout).trim(), `hello from ${to.getIp()}`]);
    }
    if (exe1.provider.id === exe2.provider.id) throw new Error("both rentals are on one provider");
    for (const [got, want] of replies) {
      if (got !== want) throw new Error(`got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    }
    await pool.destroy(rental1);
    await pool.destroy(rental2);

    await glm.destroyNetwork(network);
    console.log("VPN OK");
  } catch (err) {
    failed = true;
    console.error("Failed to run the example", err);
  } finally {
    await glm.disconnect();
  }
  process.exit(failed ? 1 : 0);
}

main();
