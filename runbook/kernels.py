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

import ast
import asyncio
import logging
import os
import shutil
import tempfile
import threading
from typing import Iterable, Mapping

from jupyter_client.manager import AsyncKernelManager
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from traitlets import default
from traitlets.utils.importstring import import_item

log = logging.getLogger(__name__)

ENGINE = "runbook"

# The keyword arguments of every papermill.execute_notebook call of the runbook.
PAPERMILL_OPTIONS = {
    "kernel_name": "python3",
    "progress_bar": False,
    "log_output": False,
    "kernel_manager_class": "runbook.kernels.IpcKernelManager",
    "engine_name": ENGINE,
}

_READY_TIMEOUT_S = 60.0      # papermill's own start_timeout
_WARM_UP_TIMEOUT_S = 120.0


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
        log_path = (kw.get("env") or os.environ).get(KERNEL_LOG_ENV)
        if not log_path or "stdout" in kw or "stderr" in kw:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return await super()._async_launch_kernel(kernel_cmd, stdout=fd,
                                                      stderr=fd, **kw)
        finally:
            os.close(fd)   # the kernel holds its own copy

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        try:
            await super()._async_cleanup_resources(restart=restart)
        finally:
            if not restart and "_runbook_dir" in self.__dict__:
                shutil.rmtree(self.__dict__.pop("_runbook_dir"), ignore_errors=True)

    # AsyncKernelManager binds cleanup_resources to the base class's method,
    # not to the one above: without this a kernel found dead at cleanup (it
    # never started, or died) left its folder behind.
    async def cleanup_resources(self, restart: bool = False) -> None:
        await self._async_cleanup_resources(restart=restart)


# -- kernels started ahead of their notebook -----------------------------------


def modules_imported_by(notebook) -> list[str]:
    """The modules a notebook's code cells import at their top level, in
    order, each once. An import inside a block or a string is not one the
    notebook always makes, so the warm-up leaves it to the notebook; a cell
    that is not plain Python (a magic) is passed over."""
    found: dict[str, None] = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.setdefault(node.module)
    return list(found)


class PreparedKernel:
    """A step's kernel, started in the background while the step before runs.

    The chain starts the next step's kernel as soon as a step begins, with
    that step's environment and working folder, and has it import the
    modules its notebook imports (silently, binding no name, leaving no
    history); papermill then runs the notebook on it (`PAPERMILL_OPTIONS`
    names the engine that takes ``prepared=``). A kernel start and the
    imports cost about 0.8 s of every step (benchmarks/bench_chain.py);
    this way they overlap the step before.

    `take()` waits for the kernel and hands over its manager, or raises what
    went wrong starting it; `discard()` shuts down a kernel nobody took
    (a step failed, Ctrl-C). Each is safe to call more than once.
    """

    def __init__(self, env: Mapping[str, str], cwd: str,
                 modules: Iterable[str] = (), *, manager_class: str | None = None,
                 kernel_name: str | None = None):
        self.env, self.cwd, self.modules = dict(env), str(cwd), list(modules)
        # Looked up now, not at import: PAPERMILL_OPTIONS is the one place to
        # change the kernel manager or kernel for every notebook of the runbook.
        options = PAPERMILL_OPTIONS
        manager = import_item(manager_class or options["kernel_manager_class"])
        self.manager = manager(kernel_name=kernel_name or options["kernel_name"])
        self.error: BaseException | None = None
        self._taken = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._start, daemon=True,
                                        name="runbook-kernel-start")
        self._thread.start()

    def take(self):
        """The started kernel's manager; the caller now owns the kernel."""
        self._thread.join()
        with self._lock:
            if self._taken:
                raise RuntimeError("this prepared kernel was taken or discarded")
            self._taken = True
        if self.error is not None:
            _shut_down(self.manager)
            raise self.error
        return self.manager

    def discard(self) -> None:
        """Shut the kernel down unless it was taken."""
        with self._lock:
            if self._taken:
                return
            self._taken = True
        self._thread.join()
        _shut_down(self.manager)

    def _start(self) -> None:
        try:
            asyncio.run(self._start_and_warm_up())
        except BaseException as exc:  # handed to whoever takes the kernel
            self.error = exc

    async def _start_and_warm_up(self) -> None:
        await self.manager.start_kernel(env=self.env, cwd=self.cwd)
        client = self.manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=_READY_TIMEOUT_S)
            if self.modules:
                # __import__ binds no name in the notebook's namespace; silent
                # leaves the execution count where the notebook starts it.
                code = "\n".join(f"__import__({name!r})" for name in self.modules)
                reply = await client.execute_interactive(
                    code, silent=True, store_history=False, timeout=_WARM_UP_TIMEOUT_S,
                    output_hook=_drop_output)
                if reply["content"].get("status") != "ok":
                    # The notebook's own import cell fails in its place, visibly.
                    log.debug("warm-up imports of %s: %s", self.modules,
                              reply["content"].get("evalue"))
        finally:
            client.stop_channels()


def _drop_output(message: dict) -> None:
    # What an import prints while warming up belongs to no notebook and on no
    # console; a notebook that imports it again shows what matters there.
    log.debug("warm-up output: %s", message.get("content"))


def _shut_down(manager, *, now: bool = True) -> None:
    """Stop a kernel and remove its files, from any thread, whatever its state
    (in a loop of its own: the caller's thread may be running one)."""
    worker = threading.Thread(
        target=lambda: _quietly(asyncio.run, _stop(manager, now=now)),
        name="runbook-kernel-stop", daemon=True)
    worker.start()
    worker.join()


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except Exception as exc:  # a kernel that is gone already is what we wanted
        log.debug("stopping a kernel: %s", exc)


class PreparedKernelEngine(NBClientEngine):
    """papermill's nbclient engine, running a notebook on a `PreparedKernel`.

    Without ``prepared=`` it is papermill's own engine. With it, the kernel
    is taken from the `PreparedKernel` instead of started, and shut down
    after the notebook like a kernel papermill started (nbclient leaves a
    kernel it did not start running).
    """

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, prepared=None, **kwargs):
        if prepared is None:
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
        timeout = kwargs.pop("execution_timeout", None) or kwargs.pop("timeout", None)
        for unused in ("input_path", "timeout", "startup_timeout"):
            kwargs.pop(unused, None)
        manager = prepared.take()
        client = None
        try:
            client = PapermillNotebookClient(
                nb_man, km=manager, kernel_name=kernel_name, timeout=timeout,
                startup_timeout=kwargs.pop("start_timeout", _READY_TIMEOUT_S),
                log=logging.getLogger("papermill"), **kwargs)
            return client.execute()
        finally:
            if client is not None and client.kc is not None:
                client.kc.stop_channels()
            # In a loop of its own: after a Ctrl-C, nbclient's may be broken.
            _shut_down(manager, now=False)


async def _stop(manager, *, now: bool) -> None:
    try:
        if await manager.is_alive():
            await manager.shutdown_kernel(now=now)
    finally:
        await manager.cleanup_resources()


papermill_engines.register(ENGINE, PreparedKernelEngine)
