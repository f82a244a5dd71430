#!/usr/bin/env python3
"""yapapi 0.13.1 hello world, as in yapapi's examples/hello-world, unmodified in
its use of the library: one task, `/bin/sh -c date` on a VM image given by hash
and URL. Configured only through the environment the library itself reads
(YAGNA_APPKEY, YAGNA_API_URL, YAGNA_SUBNET, YAGNA_PAYMENT_DRIVER/_NETWORK) plus
COMPAT_IMAGE_HASH / COMPAT_IMAGE_URL and COMPAT_STREAM=1 for stream_output=True.
Prints the provider's stdout between `RESULT>` markers; exits 0 on success.
"""
import asyncio
import os
import sys
from typing import AsyncIterable

from yapapi import Golem, Task, WorkContext
from yapapi.log import enable_default_logger
from yapapi.payload import vm


async def worker(context: WorkContext, tasks: AsyncIterable[Task]):
    async for task in tasks:
        script = context.new_script()
        future_result = script.run("/bin/sh", "-c", "date")
        yield script
        task.accept_result(result=await future_result)


async def main():
    package = await vm.repo(
        image_hash=os.environ["COMPAT_IMAGE_HASH"],
        image_url=os.environ["COMPAT_IMAGE_URL"],
    )
    tasks = [Task(data=None)]
    stream = os.environ.get("COMPAT_STREAM") == "1"
    async with Golem(budget=1.0, stream_output=stream) as golem:
        async for completed in golem.execute_tasks(worker, tasks, payload=package):
            result = completed.result
            # With stream_output the result's stdout is None (yapapi prints the stream itself).
            print("RESULT>%s<RESULT" % (result.stdout if result.stdout is not None else "streamed"), flush=True)


if __name__ == "__main__":
    enable_default_logger(log_file=os.environ.get("COMPAT_LOG_FILE", "yapapi.log"))
    asyncio.run(main())
    sys.exit(0)
