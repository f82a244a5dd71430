#!/usr/bin/env python3
"""yapapi 0.13.1 hello world, as in yapapi's examples/hello-world, unmodified in
its use of the library: one task, `/bin/sh -c date` on a VM image given by hash
and URL. Configured only through the environment the library itself reads
(YAGNA_APPKEY, YAGNA_API_URL, YAGNA_SUBNET, YAGNA_PAYMENT_DRIVER/_NETWORK) plus
COMPAT_IMAGE_HASH / COMPAT_IMAGE_URL and COMPAT_STREAM=1 for stream_output=True.
Prints the task result's stdout between `RESULT>` markers; with COMPAT_STREAM=1
(where yapapi leaves the result's stdout None) it prints instead, between
`STREAMED>` markers, the stdout that arrived as yapapi `CommandStdOut` events
from the activity's event stream: empty when nothing streamed. Exits 0 on success.
"""
import asyncio
import os
import sys
from typing import AsyncIterable

from yapapi import Golem, Task, WorkContext, events
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
    streamed = []
    results = []
    async with Golem(budget=1.0, stream_output=stream) as golem:
        if stream:
            golem.add_event_consumer(lambda event: streamed.append(event.output), [events.CommandStdOut])
        async for completed in golem.execute_tasks(worker, tasks, payload=package):
            results.append(completed.result)
    # Printed after the engine shut down, so every event has been dispatched.
    if len(results) != 1:
        sys.exit("expected one task result, got %r" % (results,))
    if stream:
        print("STREAMED>%s<STREAMED" % "".join(streamed).strip(), flush=True)
    else:
        stdout = results[0].stdout
        print("RESULT>%s<RESULT" % (stdout.strip() if stdout is not None else "None"), flush=True)


if __name__ == "__main__":
    enable_default_logger(log_file=os.environ.get("COMPAT_LOG_FILE", "yapapi.log"))
    asyncio.run(main())
    sys.exit(0)
