"""What yapapi's service runner logs as an unhandled exception of a service
(a failed command in its `start`, `run` or `shutdown`, e.g. the default
shutdown's `terminate`): yapapi only logs these and carries on, so the compat
programs collect them with a logging handler and fail when there are any.
"""
import logging


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
