"""IPython configuration for the kernels the pipeline starts (``--IPKernelApp.extra_config_file=<this file>``).

It drops two kernel log records that every headless run, or every interrupted one, printed to stderr
ahead of the pipeline's own message, and nothing else:

- ipykernel 7's start-up warning "Kernel is running over TCP without encryption ..."
  (``ipykernel/kernelapp.py``, ``IPKernelApp.init_sockets``), while the kernel's address is a loopback
  one: the pipeline's kernels listen on 127.0.0.1 (jupyter_client's default), where nothing can
  eavesdrop. A kernel on any other address still warns.
- "Exception in message handler" with a ``zmq.ZMQError`` after the kernel was asked to shut down
  (``ipykernel/kernelbase.py``, ``dispatch_shell``): on Ctrl-C papermill interrupts the kernel and shuts
  it down at once, so the interrupted cell's reply meets closed sockets; the traceback says nothing.

traitlets executes this file as a config file (with ``get_config`` defined) before the kernel binds its
sockets; importing it, as the tests do, only defines the filter.
"""

from __future__ import annotations

import ipaddress
import logging
import sys

TCP_WARNING = "Kernel is running over TCP without encryption."
HANDLER_ERROR = "Exception in message handler:"


def _kernel_app():
    """This process's started IPython kernel application, or None outside a kernel."""
    # Never import ipykernel here: importing it rewires the `comm` package for the whole process.
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    if kernelapp is None or not kernelapp.IPKernelApp.initialized():
        return None
    return kernelapp.IPKernelApp.instance()


def _on_loopback(app) -> bool:
    try:
        return ipaddress.ip_address(app.ip).is_loopback
    except ValueError:
        return app.ip == "localhost"


def _shutting_down(app) -> bool:
    # ipykernel keeps the reply to a shutdown request here from the moment it received one
    return getattr(getattr(app, "kernel", None), "_shutdown_message", None) is not None


class KernelNoiseFilter(logging.Filter):
    """Drops the two records described in the module docstring; keeps every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith((TCP_WARNING, HANDLER_ERROR)):
            return True
        app = _kernel_app()
        if app is None:
            return True
        if message.startswith(TCP_WARNING):
            return not _on_loopback(app)
        import zmq

        closed_socket = record.exc_info is not None and isinstance(record.exc_info[1], zmq.ZMQError)
        return not (closed_socket and _shutting_down(app))


if "get_config" in globals():  # loaded by traitlets as a config file, not imported
    # On the app's logger itself: traitlets' dictConfig of its handlers keeps logger filters.
    logging.getLogger("IPKernelApp").addFilter(KernelNoiseFilter())
