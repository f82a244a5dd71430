// golem-js 3.6 basic flow, unmodified use of the SDK: rent one provider, run a
// command, upload a file and download one back, finish the rental and pay.
// Reads only what the SDK reads (YAGNA_APPKEY, YAGNA_API_URL, YAGNA_SUBNET) plus
// COMPAT_IMAGE_HASH / COMPAT_IMAGE_URL, YAGNA_PAYMENT_DRIVER / _NETWORK (passed as
// the SDK's `payment` option when set) and COMPAT_NO_TRANSFER=1 (skip the files).
// Prints "GOLEMJS OK" and exits 0 on success; exits 1 with the error otherwise.
const { GolemNetwork } = require("@golem-sdk/golem-js");
const { sdkOptions } = require("./sdk-options.cjs");

const order = {
  demand: {
    workload: { imageUrl: process.env.COMPAT_IMAGE_URL, imageHash: process.env.COMPAT_IMAGE_HASH },
  },
  market: {
    rentHours: 15 / 60,
    pricing: { model: "linear", maxStartPrice: 1, maxCpuPerHourPrice: 10, maxEnvPerHourPrice: 10 },
  },
};

async function main() {
  const glm = new GolemNetwork(sdkOptions());
  let failed = false;
  try {
    await glm.connect();
    const rental = await glm.oneOf({ order });
    const exe = await rental.getExeUnit();
    const result = await exe.run("date");
    console.log(`RUN>${result.stdout}<RUN`);
    if (result.result !== "Ok") throw new Error(`run failed: ${JSON.stringify(result)}`);
    if (process.env.COMPAT_NO_TRANSFER !== "1") {
      const payload = `compat payload ${Date.now()}`;
      // uploadData/downloadData resolve (not reject) when the transfer command fails.
      const upload = await exe.uploadData(new TextEncoder().encode(payload), "/golem/input/in.txt");
      if (upload.result !== "Ok") throw new Error(`upload failed: ${JSON.stringify(upload)}`);
      const copy = await exe.run("cat /golem/input/in.txt > /golem/output/x");
      if (copy.result !== "Ok") throw new Error(`copy failed: ${JSON.stringify(copy)}`);
      const back = await exe.downloadData("/golem/output/x");
      if (back.result !== "Ok") throw new Error(`download failed: ${JSON.stringify(back)}`);
      const text = new TextDecoder().decode(back.data);
      console.log(`DOWNLOADED>${text}<DOWNLOADED`);
      if (!text.includes(payload)) throw new Error(`downloaded ${JSON.stringify(text)}, expected it to contain ${payload}`);
    }
    await rental.stopAndFinalize();
    console.log("GOLEMJS OK");
  } catch (error) {
    failed = true;
    console.error("golem-js flow failed:", error);
  } finally {
    await glm.disconnect();
  }
  process.exit(failed ? 1 : 0);
}

main();
