#!/usr/bin/env python3
"""yapapi 0.13.1 file round trip through gftp, unmodified use of the library:
upload_bytes to the provider, a command that copies the file, download_bytes
back. Same environment as hello.py. Prints "ROUNDTRIP OK" and exits 0 when the
downloaded bytes contain the uploaded ones (the compat stand-in's /bin/sh
prefixes them; a real VM copies them as they are)."""
import asyncio
import os
import sys
from typing import AsyncIterable

from yapapi import Golem, Task, WorkContext
from yapapi.log import enable_default_logger
from yapapi.payload import vm

# Below 1 KiB: the compat stand-in's /bin/sh (a wasm module) reads at most 1 KiB.
PAYLOAD = ("compat round trip %d " % os.getpid()).encode() * 16
downloaded = []


async def on_download(data: bytes):
    downloaded.append(data)


async def worker(context: WorkContext, tasks: AsyncIterable[Task]):
    async for task in tasks:
        script = context.new_script()
        script.upload_bytes(PAYLOAD, "/golem/input/in.txt")
        script.run("/bin/sh", "-c", "cat /golem/input/in.txt > /golem/output/x")
        script.download_bytes("/golem/output/x", on_download)
        yield script
        task.accept_result()


async def main():
    package = await vm.repo(
        image_hash=os.environ["COMPAT_IMAGE_HASH"],
        image_url=os.environ["COMPAT_IMAGE_URL"],
    )
    async with Golem(budget=1.0) as golem:
        async for _ in golem.execute_tasks(worker, [Task(data=None)], payload=package):
            pass
    if len(downloaded) != 1 or PAYLOAD not in downloaded[0]:
        print("downloaded %r, expected it to contain the uploaded bytes" % downloaded[:1], flush=True)
        sys.exit(1)
    print("ROUNDTRIP OK", flush=True)


if __name__ == "__main__":
    enable_default_logger(log_file=os.environ.get("COMPAT_LOG_FILE", "yapapi.log"))
    asyncio.run(main())
