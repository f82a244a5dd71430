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
// end (`waitFor(() => server.isFinished())`). Before that, a second request on
// a connection left idle for COMPAT_IDLE_MS (default 25 s) checks that the
// proxy's WebSocket survives the SDK's heartbeat (a ping every 10 s, killed
// without a pong) and the daemon's. Payment as basic.cjs (YAGNA_PAYMENT_DRIVER / _NETWORK when set).
// Prints the page between PAGE> markers and "TCP PROXY OK"; exits 1 on failure.
const fs = require("fs");
const http = require("http");
const net = require("net");
const os = require("os");
const path = require("path");
const { GolemNetwork, waitFor } = require("@golem-sdk/golem-js");
const { sdkOptions } = require("./sdk-options.cjs");

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

// A raw HTTP/1.0 exchange on a connection to the proxy that first stays idle
// for `idleMs`: the TcpProxy pings its WebSocket every 10 s and kills it
// when a pong is missing, the daemon pings every 5 s.
function idleThenGet(port, idleMs) {
  return new Promise((resolve, reject) => {
    let reply = "";
    const socket = net.connect(port, "127.0.0.1", () => {
      setTimeout(() => socket.write("GET / HTTP/1.0\r\n\r\n"), idleMs);
    });
    socket.setEncoding("utf8");
    socket.on("data", (chunk) => (reply += chunk));
    socket.on("end", () => resolve(reply));
    socket.on("error", reject);
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
  const glm = new GolemNetwork(sdkOptions());
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

    // A browser may keep its connection open: one idle across the heartbeats.
    const idleMs = Number(process.env.COMPAT_IDLE_MS || 25000);
    const idleReply = await idleThenGet(PORT_ON_REQUESTOR, idleMs);
    console.log(`IDLE>${idleReply.split("\r\n")[0]} ${idleReply.split("\r\n\r\n")[1]?.trim()}<IDLE`);
    if (!idleReply.startsWith("HTTP/1.1 200") || idleReply.split("\r\n\r\n")[1]?.trim() !== PAGE) {
      throw new Error(`unexpected reply after ${idleMs} ms idle: ${JSON.stringify(idleReply)}`);
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
