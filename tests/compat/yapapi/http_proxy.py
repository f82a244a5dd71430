#!/usr/bin/env python3
"""yapapi 0.13.1 examples/http-proxy, unmodified in its use of the library:
`Golem.create_network`, `Golem.run_service` of an `HttpProxyService` cluster in
that network (the payload demands the `vpn` capability), then
`yapapi.contrib.service.http_proxy.LocalHttpProxy` forwarding a local port to
the instances through the daemon's Net API WebSocket; at the end the proxy and
the cluster stop and the network is removed.

Differences from the example, all in the image it runs, none in the SDK calls:
- the image is the suite's busybox one (COMPAT_IMAGE_HASH / COMPAT_IMAGE_URL)
  and busybox `httpd` stands in for nginx; the container runs as uid 65534
  with a read-only root, so the page is written to the /golem/work volume and
  httpd listens on 8080 (`remote_port`, HttpProxyService's own parameter)
  instead of 80;
- nginx daemonizes and closes its stdio; busybox httpd keeps the exec's
  stdio open when it forks, so it is started with them redirected;
- instead of waiting for Ctrl-C, the program itself sends one HTTP GET per
  instance to the local proxy port (the example's `curl localhost:8080`) and
  prints each page between `PAGE>` markers.

For the benchmark (scripts/bench/compat.sh) it also prints
`FIRST_RESPONSE_AFTER <seconds>`: from the program's start (before yapapi is
imported) to the first proxied page.

Configured through the environment the library reads (YAGNA_APPKEY,
YAGNA_API_URL, YAGNA_SUBNET, YAGNA_PAYMENT_DRIVER/_NETWORK) plus the image and
COMPAT_INSTANCES (default 2, as the example). Prints "HTTP PROXY OK" and exits
0 when every GET returned an instance's page, each instance answered and every
instance ended terminated.
"""
import time

STARTED = time.monotonic()

import asyncio  # noqa: E402 (after the start time, which counts the imports)
import os
import shlex
import socket
import sys
from datetime import datetime, timedelta, timezone

import aiohttp

from yapapi import Golem
from yapapi.contrib.service.http_proxy import HttpProxyService, LocalHttpProxy
from yapapi.log import enable_default_logger
from yapapi.payload import vm
from yapapi.services import ServiceState

STARTING_TIMEOUT = timedelta(minutes=1)
EXPIRATION_MARGIN = timedelta(minutes=5)
REMOTE_PORT = 8080
PAGE_DIR = "/golem/work"


class HttpService(HttpProxyService):
    @staticmethod
    async def get_payload():
        return await vm.repo(
            image_hash=os.environ["COMPAT_IMAGE_HASH"],
            image_url=os.environ["COMPAT_IMAGE_URL"],
            # only VPN-capable VM runtimes, as the example
            capabilities=[vm.VM_CAPS_VPN],
        )

    async def start(self):
        # the deploy (with the network) and start
        async for script in super().start():
            yield script

        script = self._ctx.new_script(timeout=timedelta(minutes=1))
        msg = f"Hello from inside Golem!\n... running on {self.provider_name}"
        script.run("/bin/sh", "-c", f"echo {shlex.quote(msg)} > {PAGE_DIR}/index.html")
        script.run(
            "/bin/sh", "-c", f"httpd -p {REMOTE_PORT} -h {PAGE_DIR} </dev/null >/dev/null 2>&1"
        )
        yield script

    async def shutdown(self):
        script = self._ctx.new_script()
        script.run("/bin/cat", f"{PAGE_DIR}/index.html")
        yield script

    async def reset(self):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main(num_instances: int, port: int, running_time: int) -> None:
    pages = []
    async with Golem(budget=1.0) as golem:
        commissioning_time = datetime.now()

        network = await golem.create_network("192.168.0.1/24")
        cluster = await golem.run_service(
            HttpService,
            network=network,
            num_instances=num_instances,
            instance_params=[{"remote_port": REMOTE_PORT}] * num_instances,
            expiration=datetime.now(timezone.utc)
            + STARTING_TIMEOUT
            + EXPIRATION_MARGIN
            + timedelta(seconds=running_time),
        )
        instances = cluster.instances

        def still_starting():
            return any(i.state in (ServiceState.pending, ServiceState.starting) for i in instances)

        while still_starting() and datetime.now() < commissioning_time + STARTING_TIMEOUT:
            print(f"instances: {instances}", flush=True)
            await asyncio.sleep(1)

        if still_starting():
            raise Exception(
                f"Failed to start instances after {STARTING_TIMEOUT.total_seconds()} seconds"
            )

        proxy = LocalHttpProxy(cluster, port)
        await proxy.run()
        print(f"Local HTTP server listening on: http://localhost:{port}", flush=True)

        # The example's user: one GET per instance (the proxy goes round-robin).
        async with aiohttp.ClientSession() as session:
            for _ in range(num_instances):
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    text = await response.text()
                    if not pages:
                        after = time.monotonic() - STARTED
                        print(f"FIRST_RESPONSE_AFTER {after:.2f}", flush=True)
                    print(f"PAGE>{response.status} {text.strip()}<PAGE", flush=True)
                    pages.append((response.status, text))

        await proxy.stop()
        print("HTTP server stopped", flush=True)

        cluster.stop()

        cnt = 0
        while cnt < 15 and any(s.is_available for s in instances):
            print(instances, flush=True)
            await asyncio.sleep(1)
            cnt += 1

        await network.remove()

    states = [i.state for i in instances]
    print(f"final instance states: {[s.value for s in states]}", flush=True)
    if len(pages) != num_instances:
        sys.exit(f"expected {num_instances} pages, got {pages!r}")
    for status, text in pages:
        if status != 200 or not text.startswith("Hello from inside Golem!"):
            sys.exit(f"unexpected page: {status} {text!r}")
    providers = {text.split("running on", 1)[-1].strip() for _, text in pages}
    if len(providers) != num_instances:
        sys.exit(f"expected a page from each of {num_instances} instances, got {providers!r}")
    if any(s != ServiceState.terminated for s in states):
        sys.exit(f"instances did not all stop: {[s.value for s in states]}")
    print("HTTP PROXY OK", flush=True)


if __name__ == "__main__":
    enable_default_logger(log_file=os.environ.get("COMPAT_LOG_FILE", "yapapi.log"))
    asyncio.run(
        main(
            num_instances=int(os.environ.get("COMPAT_INSTANCES", "2")),
            port=free_port(),
            running_time=30,
        )
    )
    sys.exit(0)
