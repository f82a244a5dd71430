// golem-js 3.6's own WebSocketStorageProvider (the SDK's default file transfer)
// against our daemon's GSB API, without a provider: it publishes some bytes and
// opens a receive slot, prints both gftp URLs, and reports what it received.
// tests/tests/compat.rs plays the exe unit's side over the daemon's bus.
// Input: COMPAT_PUBLISH (text to publish). Output lines:
//   PUBLISHED <gftp url>, RECEIVING <gftp url>, RECEIVED <base64> | RECEIVE-ERROR <message>
// Exits when stdin closes (after releasing its services).
const { YagnaApi, WebSocketStorageProvider } = require("@golem-sdk/golem-js");

async function main() {
  const api = new YagnaApi();
  const storage = new WebSocketStorageProvider(api);
  await storage.init();
  const published = await storage.publishData(new TextEncoder().encode(process.env.COMPAT_PUBLISH || ""));
  console.log(`PUBLISHED ${published}`);
  const receiving = await storage.receiveData((data) => {
    console.log(`RECEIVED ${Buffer.from(data).toString("base64")}`);
  });
  console.log(`RECEIVING ${receiving}`);
  process.on("uncaughtException", (error) => console.log(`RECEIVE-ERROR ${error.message}`));
  process.stdin.resume();
  process.stdin.on("end", async () => {
    await storage.close();
    setTimeout(() => process.exit(0), 200);
  });
}

main().catch((error) => {
  console.error("gsb-storage failed:", error);
  process.exit(1);
});
