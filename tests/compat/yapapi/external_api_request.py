#!/usr/bin/env python3
"""yapapi 0.13.1 examples/external-api-request/external_api_request.py,
unmodified in its use of the library: an `ApiCallService` whose payload is
`vm.manifest(manifest=..., manifest_sig=..., manifest_sig_algorithm="sha256",
manifest_cert=..., min_mem_gib=0.5, min_cpu_threads=0.5,
capabilities=["inet", "manifest-support"])`, read from the example's file
names in the working directory (manifest_whitelist.json,
manifest.json.base64.sha256.sig, golem_sign.pem), whose `run()` makes one
HTTP request from inside the container and prints its output, started with
`Golem.run_service(ApiCallService, num_instances=1)`.

Differences from the example, none in the SDK calls:
- the files are made by run.sh as the example's sign.sh makes them
  (`base64 --wrap=0` of the manifest, `openssl dgst -sha256 -sign`), with a
  test CA that run.sh mints and the provider trusts (`golem-provider rule set
  outbound audited-payload import-cert ... --mode all`) instead of Golem's
  certificate; the manifest's payload is the suite's busybox image and its
  one outbound URL is `http://<host>:<port>` served by run.sh on the Docker
  bridge's host address (COMPAT_OUTBOUND_URL), not api.coingecko.com;
- the command: busybox has no curl or jq, so `wget` fetches a JSON price and
  `sed` takes the number out; it prints the example's `Golem price: ... USD`;
- Golem() takes its subnet and payment from the environment the library
  reads (YAGNA_SUBNET, YAGNA_PAYMENT_DRIVER/_NETWORK) instead of the
  examples' argument parser and utils;
- instead of printing the instances every 10 s until Ctrl-C, `main` calls
  `cluster.stop()` once the output arrived and waits for the instance to
  stop.

Prints "EXTERNAL API OK" and exits 0 when the price printed is the one
served (COMPAT_OUTBOUND_PRICE) and the instance ended terminated, with
yapapi's service runner logging no unhandled exception of the service
(service_checks.py; the default `shutdown`'s `terminate` command included).
"""
import asyncio
import os
import sys
from datetime import datetime, timedelta

from yapapi import Golem
from yapapi.log import enable_default_logger
from yapapi.payload import vm
from yapapi.services import Service

from service_checks import ServiceErrors, exit_unless_ended_cleanly, wait_until_stopped

API_URL = os.environ["COMPAT_OUTBOUND_URL"]
STARTING_TIMEOUT = timedelta(minutes=2)

outputs = []


class ApiCallService(Service):
    @staticmethod
    async def get_payload():
        manifest = open("manifest_whitelist.json", "rb").read()
        manifest_sig = open("manifest.json.base64.sha256.sig", "rb").read()
        manifest_sig_algorithm = "sha256"
        # DER, PEM and PEM chain formats are supported
        manifest_cert = open("golem_sign.pem", "rb").read()

        return await vm.manifest(
            manifest=manifest,
            manifest_sig=manifest_sig,
            manifest_sig_algorithm=manifest_sig_algorithm,
            manifest_cert=manifest_cert,
            min_mem_gib=0.5,
            min_cpu_threads=0.5,
            capabilities=["inet", "manifest-support"],
        )

    async def run(self):
        script = self._ctx.new_script()
        future_result = script.run(
            "/bin/sh",
            "-c",
            f"GOLEM_PRICE=`wget -q -O - '{API_URL}/api/v3/simple/price?ids=golem&vs_currencies=usd' \
                    | sed -n 's/.*\"usd\": *\\([0-9.]*\\).*/\\1/p'`; \
                echo ---; \
                echo \"Golem price: $GOLEM_PRICE USD\"; \
                echo ---;",
        )
        yield script

        result = (await future_result).stdout
        print(result.strip() if result else "")
        outputs.append(result or "")


async def main(expected_price: str) -> None:
    service_errors = ServiceErrors()
    async with Golem(budget=1.0) as golem:
        cluster = await golem.run_service(ApiCallService, num_instances=1)
        start_time = datetime.now()

        while not outputs:
            if datetime.now() > start_time + STARTING_TIMEOUT:
                sys.exit(f"no output after {STARTING_TIMEOUT.total_seconds()} s: {cluster.instances}")
            print(cluster.instances, flush=True)
            await asyncio.sleep(1)

        cluster.stop()
        states = await wait_until_stopped(cluster.instances)

    if f"Golem price: {expected_price} USD" not in outputs[0]:
        sys.exit(f"expected the served price {expected_price}, got {outputs[0]!r}")
    exit_unless_ended_cleanly(service_errors, states)
    print("EXTERNAL API OK", flush=True)


if __name__ == "__main__":
    enable_default_logger(log_file=os.environ.get("COMPAT_LOG_FILE", "external-api-request.log"))
    asyncio.run(main(os.environ["COMPAT_OUTBOUND_PRICE"]))
    sys.exit(0)
