// The GolemNetwork options every compat program passes: the SDK's `payment`
// option from YAGNA_PAYMENT_DRIVER / YAGNA_PAYMENT_NETWORK when the driver is
// set (run.sh sets them for the programs it pays on dummy), else none (the
// SDK's own default, erc20 holesky).
function sdkOptions() {
  const options = {};
  if (process.env.YAGNA_PAYMENT_DRIVER) {
    options.payment = { driver: process.env.YAGNA_PAYMENT_DRIVER, network: process.env.YAGNA_PAYMENT_NETWORK };
  }
  return options;
}

module.exports = { sdkOptions };
