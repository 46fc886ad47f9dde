"""``TaskWorker``: the daemon's handle on its task worker process (trio).

One worker process serves calls one at a time, started on first use and kept
(importing torch costs about a second, too much to pay per call). A call that
does not end in a checked answer kills the process; the next call starts a
new one. So a crash, an out-of-memory, a hang (killed at the call's deadline)
or garbage ends that one call with ``WorkerFailure(reason)``, counted in
``failures``, and the daemon carries on.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import torch
import trio
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from flocknode.worker.protocol import (
    MAX_LINE,
    Reason,
    Request,
    TensorSpec,
    WorkerFailure,
    check_tensors,
    decode_answer,
    max_tensor_bytes,
)
from flocknode.worker.sandbox import IsolationUnavailable, WorkerSpec, command, worker_env

START_TIMEOUT = 120.0  # process start, jail set-up and the torch import
STDERR_TAIL = 2048


class TaskWorker:
    """Run task functions (``module:function``) in a separate, limited process.

    ``spec`` without a ``base`` directory gets a private temporary one.
    ``on_failure(reason)`` is called once per failed call (metrics).
    """

    def __init__(
        self,
        spec: WorkerSpec,
        on_failure: Callable[[Reason], None] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if not spec.base:
            self._tmp = tempfile.TemporaryDirectory(prefix="flocknode-worker-")
            spec = WorkerSpec(**{**spec.__dict__, "base": self._tmp.name})
        self.spec = spec
        spec.scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        spec.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.failures: collections.Counter[str] = collections.Counter()
        self.starts = 0
        self._on_failure = on_failure
        self._proc: trio.Process | None = None
        self._buf = bytearray()
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=64)
        self._lock = trio.Lock()
        self._killed: list[trio.Process] = []
        self._next_id = 1

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the worker now (else the first call does), so its start is not in a role's time."""
        async with self._lock:
            try:
                await self._ensure(START_TIMEOUT)
            finally:
                await self._reap()

    async def call(
        self,
        call: str,
        tensors: Mapping[str, torch.Tensor],
        args: Mapping[str, Any],
        *,
        expect: TensorSpec | int | None,
        timeout: float,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Run ``call(tensors, args)`` in the worker within ``timeout`` seconds.

        ``expect``: the names, shapes and dtypes the returned tensors must have;
        a number: any tensors of at most that many bytes, at least one (the
        caller checks them, e.g. against a hash); None: the call must return
        none. ``WorkerFailure`` on any failure.
        """
        async with self._lock:
            try:
                with trio.fail_after(timeout):
                    return await self._call(call, tensors, args, expect)
            except trio.TooSlowError:
                failure = WorkerFailure("timeout", f"no answer within {timeout:g} s, killed")
            except WorkerFailure as e:
                failure = e
            finally:
                await self._reap()
            self.count(failure.reason)
            raise failure

    def kill(self) -> None:
        """Kill the worker's whole process group (idempotent, never blocks)."""
        proc, self._proc = self._proc, None
        self._buf.clear()
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            self._killed.append(proc)

    async def refuse(self, reason: Reason) -> None:
        """A result the caller refused: kill the worker (the next call starts a new
        one), count the failure, and wait for the process to exit."""
        self.kill()
        self.count(reason)
        await self._reap()

    async def _reap(self) -> None:
        """Wait for killed processes to exit (no zombies), even while being cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            while self._killed:
                await self._killed[0].wait()
                self._killed.pop(0)

    def close(self) -> None:
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- internals ---------------------------------------------------------
    def count(self, reason: Reason) -> None:
        """Count one failed call (also results the caller refused)."""
        self.failures[reason] += 1
        if self._on_failure is not None:
            self._on_failure(reason)

    def _fail(self, reason: Reason, detail: str) -> NoReturn:
        """Kill the worker and raise, with the last line it wrote to stderr."""
        tail = b"".join(self._stderr)[-STDERR_TAIL:].decode(errors="replace").strip()
        self.kill()
        if tail:
            detail = f"{detail}; stderr: {tail.splitlines()[-1][:300]}"
        raise WorkerFailure(reason, detail)

    async def _ensure(self, timeout: float) -> trio.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        self.kill()
        try:
            cmd = command(self.spec)
        except IsolationUnavailable as e:
            raise WorkerFailure("unavailable", str(e)) from None
        self._stderr.clear()
        self._proc = await trio.lowlevel.open_process(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=worker_env(self.spec),
            cwd=str(self.spec.scratch),
        )
        self.starts += 1
        try:
            with trio.fail_after(timeout):
                line = await self._exchange(None, 0)
            decode_answer(line, 0)
        except (trio.TooSlowError, WorkerFailure) as e:
            self.kill()
            raise WorkerFailure("unavailable", f"worker did not start: {e}") from None
        return self._proc

    async def _call(
        self,
        call: str,
        tensors: Mapping[str, torch.Tensor],
        args: Mapping[str, Any],
        expect: TensorSpec | int | None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        sound = False  # the process answered and may serve the next call
        try:
            await self._ensure(START_TIMEOUT)
            blob = b""
            if tensors:
                blob = save_tensors({k: t.detach().cpu().contiguous() for k, t in tensors.items()})
            req_id, self._next_id = self._next_id, self._next_id + 1
            request = Request(req_id, call, args, len(blob)).encode() + blob
            answer = decode_answer(await self._exchange(request, req_id), req_id)
            if not answer.ok:
                # a task that raised leaves a sound process; one out of memory does not
                sound = answer.reason == "error"
                raise WorkerFailure(answer.reason, answer.detail, answer.kind)
            result: dict[str, Any] = dict(answer.result)
            if expect is None:
                if answer.tensor_bytes:
                    raise WorkerFailure("garbage", "tensors returned where none are expected")
                sound = True
                return {}, result
            limit = expect if isinstance(expect, int) else max_tensor_bytes(expect)
            if not 0 < answer.tensor_bytes <= limit:
                raise WorkerFailure(
                    "garbage", f"{answer.tensor_bytes} tensor bytes (limit {limit})"
                )
            raw = await self._read_exact(answer.tensor_bytes)
            try:
                got = load_tensors(raw)
            except Exception as e:
                raise WorkerFailure("garbage", f"unreadable tensors ({e})") from None
            if isinstance(expect, int):
                sound = True
                return got, result
            check_tensors(got, expect)
            sound = True
            return {k: got[k] for k in expect}, result  # the expected order, not sorted
        finally:
            if not sound:
                self.kill()

    async def _read_exact(self, n: int) -> bytes:
        """The ``n`` bytes after the answer line (the worker's death ends the call)."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        while len(self._buf) < n:
            chunk = await proc.stdout.receive_some(max(65536, n - len(self._buf)))
            if not chunk:
                self._fail(*_death(await _exit_code(proc)))
            self._buf += chunk
        raw = bytes(self._buf[:n])
        del self._buf[:n]
        return raw

    async def _exchange(self, request: bytes | None, want_id: int) -> bytes:
        """Send ``request`` (if any) and read the next answer line, draining stderr meanwhile."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        line: bytes | None = b""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain_stderr, proc)
            try:
                if request is not None:
                    await proc.stdin.send_all(request)
                line = await self._read_line(proc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                line = b""
            nursery.cancel_scope.cancel()
        if line is None:
            self._fail("garbage", f"answer longer than {MAX_LINE} bytes")
        if not line:
            code = await _exit_code(proc)
            self._fail(*_death(code))
        return line

    async def _read_line(self, proc: trio.Process) -> bytes | None:
        """The next line; b"" at the end of output, None past ``MAX_LINE`` bytes."""
        assert proc.stdout is not None
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                return None
            chunk = await proc.stdout.receive_some(65536)
            if not chunk:
                return b""
            self._buf += chunk
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf[:] = rest
        return line

    async def _drain_stderr(self, proc: trio.Process) -> None:
        assert proc.stderr is not None
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while chunk := await proc.stderr.receive_some(65536):
                self._stderr.append(chunk)


async def _exit_code(proc: trio.Process) -> int:
    with trio.move_on_after(5):
        return await proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return await proc.wait()


def _death(code: int) -> tuple[Reason, str]:
    """The reason for a worker that closed its output with exit status ``code``."""
    if code == -signal.SIGKILL:
        return "oom", "worker killed by SIGKILL (the kernel's out-of-memory killer?)"
    if code < 0:
        return "crash", f"worker died of {signal.Signals(-code).name}"
    return "crash", f"worker exited with status {code}"
