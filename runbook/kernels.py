"""Kernels that talk to their runner over Unix sockets, and how papermill gets them.

Every notebook the runbook executes (the chain's steps, a rollback, every
tenant of a batch) runs in a kernel started through `PAPERMILL_OPTIONS`, whose
`IpcKernelManager` puts the kernel's connection file and its five ZeroMQ
sockets in a private 0700 directory instead of on TCP ports. Why: many
kernels starting at once (a batch) cannot collide on a port, nothing listens
on the network, and ipykernel's warning that a TCP kernel talks in plain text
no longer fills the log. What stays on TCP is ipykernel's own pipe for the
output of forked subprocesses, bound by the kernel itself on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

log = logging.getLogger(__name__)

# The keyword arguments of every papermill.execute_notebook call of the runbook.
PAPERMILL_OPTIONS = {
    "kernel_name": "python3",
    "progress_bar": False,
    "log_output": False,
    "kernel_manager_class": "runbook.kernels.IpcKernelManager",
}


# Set by the chain for each step: the file that takes the kernel's own output.
KERNEL_LOG_ENV = "RUNBOOK_KERNEL_LOG"


class IpcKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel listens on Unix sockets, not TCP ports.

    Each kernel gets a fresh 0700 directory for its connection file and its
    five ZeroMQ sockets (``kernel-1`` ... ``kernel-5``), removed when the
    kernel is cleaned up. Pass it to papermill as
    ``kernel_manager_class="runbook.kernels.IpcKernelManager"``.
    """

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("connection_file")
    def _default_connection_file(self) -> str:
        return os.path.join(self._private_dir, "kernel.json")

    @default("ip")
    def _default_ip(self) -> str:
        return os.path.join(self._private_dir, "kernel")

    @property
    def _private_dir(self) -> str:
        folder = self.__dict__.get("_runbook_dir")
        if folder is None:
            folder = tempfile.mkdtemp(prefix="runbook-kernel-")  # mode 0700
            self.__dict__["_runbook_dir"] = folder
            log.debug("kernel sockets in %s", folder)
        return folder

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        # The kernel's own output (ipykernel's warnings, its shutdown chatter,
        # a traceback when it dies) goes to the step's log in the run folder
        # when the chain names one, not onto the engineer's console.
        log_path = os.environ.get(KERNEL_LOG_ENV)
        if not log_path or "stdout" in kw or "stderr" in kw:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return await super()._async_launch_kernel(kernel_cmd, stdout=fd,
                                                      stderr=fd, **kw)
        finally:
            os.close(fd)   # the kernel holds its own copy

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart and "_runbook_dir" in self.__dict__:
            shutil.rmtree(self.__dict__.pop("_runbook_dir"), ignore_errors=True)
