"""Checks the compat programs of yapapi's Services API share: how a stopped
cluster's instances ended, and what yapapi's service runner logged as an
unhandled exception of a service (a failed command in its `start`, `run` or
`shutdown`, e.g. the default shutdown's `terminate`). yapapi only logs those
and carries on, so the programs collect them with a logging handler and fail
when there are any.
"""
import asyncio
import logging
import sys

from yapapi.services import ServiceState


class ServiceErrors(logging.Handler):
    """Collects the service runner's "Unhandled exception in service" records."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []
        logging.getLogger("yapapi.services.service_runner").addHandler(self)

    def emit(self, record):
        if "Unhandled exception" in record.getMessage():
            error = record.exc_info[1] if record.exc_info else None
            self.messages.append(f"{record.getMessage()}: {error!r}")


async def wait_until_stopped(instances, seconds=15):
    """After `cluster.stop()`: wait up to `seconds` for every instance to stop
    being available; returns their states (also printed)."""
    waited = 0
    while waited < seconds and any(i.is_available for i in instances):
        await asyncio.sleep(1)
        waited += 1
    states = [i.state for i in instances]
    print(f"final instance states: {[s.value for s in states]}", flush=True)
    return states


def exit_unless_ended_cleanly(service_errors, states, count=1):
    """Exit with the reason unless `count` instances ended terminated and the
    service runner logged no unhandled exception."""
    if service_errors.messages:
        sys.exit(f"the service runner logged failures: {service_errors.messages}")
    if len(states) != count or any(s != ServiceState.terminated for s in states):
        sys.exit(f"the instances did not all end terminated: {[s.value for s in states]}")
