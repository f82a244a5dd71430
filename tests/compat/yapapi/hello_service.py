#!/usr/bin/env python3
"""yapapi 0.13.1 examples/hello-world/hello_service.py, unmodified in its use of
the library: a `Service` subclass (`DateService`) whose `start()` runs the
default deploy+start and then a script leaving a background loop that writes
`date` to /golem/work/date.txt every REFRESH_INTERVAL_SEC, whose `run()` loops
forever reading that file with `cat` and printing it, started with
`Golem.run_service(DateService, num_instances=1)` while `main` prints the
instances' states.

Differences from the example, none in the SDK calls:
- the image is the suite's busybox one, given by hash and URL
  (COMPAT_IMAGE_HASH / COMPAT_IMAGE_URL) instead of the original's hash alone;
- the background loop is started with its stdio redirected (busybox `sh`
  keeps the exec's stdout open in a background job, so the `run` command
  would not end) and REFRESH_INTERVAL_SEC is 2 instead of 5;
- `run()` prints each reading between `DATE>` markers, so the checks can
  count them;
- instead of running for a minute (the Golem context then stopping the
  service), `main` calls `cluster.stop()` once COMPAT_READINGS (default 3)
  readings arrived, waits for the instance to stop, and checks it.

Configured through the environment the library reads (YAGNA_APPKEY,
YAGNA_API_URL, YAGNA_SUBNET, YAGNA_PAYMENT_DRIVER/_NETWORK) plus the image.
Prints "HELLO SERVICE OK" and exits 0 when the readings are busybox `date`
output, at least two of them differ (the loop started in `start()` kept
running across the `run()` scripts) and the instance ended terminated, with
yapapi's service runner logging no unhandled exception of the service
(service_checks.py; the default `shutdown`'s `terminate` command included).
"""
import asyncio
import os
import re
import sys
from datetime import datetime, timedelta

from yapapi import Golem
from yapapi.log import enable_default_logger
from yapapi.payload import vm
from yapapi.services import Service

from service_checks import ServiceErrors, exit_unless_ended_cleanly, wait_until_stopped

DATE_OUTPUT_PATH = "/golem/work/date.txt"
REFRESH_INTERVAL_SEC = 2
STARTING_TIMEOUT = timedelta(minutes=1)
DATE_PATTERN = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2} [A-Z]+ \d{4}$")

readings = []


class DateService(Service):
    @staticmethod
    async def get_payload():
        return await vm.repo(
            image_hash=os.environ["COMPAT_IMAGE_HASH"],
            image_url=os.environ["COMPAT_IMAGE_URL"],
        )

    async def start(self):
        async for script in super().start():
            yield script

        # every `REFRESH_INTERVAL_SEC` write output of `date` to `DATE_OUTPUT_PATH`
        script = self._ctx.new_script()
        script.run(
            "/bin/sh",
            "-c",
            f"while true; do date > {DATE_OUTPUT_PATH}; sleep {REFRESH_INTERVAL_SEC}; done"
            " </dev/null >/dev/null 2>&1 &",
        )
        yield script

    async def run(self):
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_SEC)
            script = self._ctx.new_script()
            future_result = script.run(
                "/bin/sh",
                "-c",
                f"cat {DATE_OUTPUT_PATH}",
            )

            yield script

            result = (await future_result).stdout
            reading = result.strip() if result else ""
            readings.append(reading)
            print(f"DATE>{reading}<DATE", flush=True)


async def main(wanted_readings: int) -> None:
    service_errors = ServiceErrors()
    async with Golem(budget=1.0) as golem:
        cluster = await golem.run_service(DateService, num_instances=1)
        start_time = datetime.now()

        while len(readings) < wanted_readings:
            if datetime.now() > start_time + STARTING_TIMEOUT + timedelta(
                seconds=wanted_readings * REFRESH_INTERVAL_SEC
            ):
                sys.exit(f"only {len(readings)} readings of {wanted_readings} arrived")
            for num, instance in enumerate(cluster.instances):
                print(f"Instance {num} is {instance.state.value} on {instance.provider_name}", flush=True)
            await asyncio.sleep(REFRESH_INTERVAL_SEC)

        cluster.stop()
        states = await wait_until_stopped(cluster.instances)

    taken = readings[:wanted_readings]
    bad = [r for r in taken if not DATE_PATTERN.match(r)]
    if bad:
        sys.exit(f"readings that are not `date` output: {bad!r}")
    if len(set(taken)) < 2:
        sys.exit(f"the date file never changed between readings: {taken!r}")
    exit_unless_ended_cleanly(service_errors, states)
    print("HELLO SERVICE OK", flush=True)


if __name__ == "__main__":
    enable_default_logger(log_file=os.environ.get("COMPAT_LOG_FILE", "hello.log"))
    asyncio.run(main(int(os.environ.get("COMPAT_READINGS", "3"))))
    sys.exit(0)
