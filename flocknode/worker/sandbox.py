"""How the task worker is started, and the jail it runs in (Linux namespaces).

``namespace`` isolation (the default) starts the worker as

    unshare --net --mount --pid --fork --kill-child [--map-root-user] \\
        python -I -m flocknode.worker.jail SPEC

(``--map-root-user`` when the daemon is not root: an unprivileged user
namespace). ``jail`` then, inside the new namespaces:

- mounts an empty tmpfs as the new root and binds into it, read-only and
  ``nosuid,nodev``: ``/usr`` (and the ``/bin``, ``/lib``... links or
  directories), a few files of ``/etc`` (the loader cache, passwd, group,
  localtime), the Python installation and its ``sys.path`` directories, the
  flocknode package, and the spec's read-only paths (the ``[data] path`` and
  the task's package); the scratch directory read-write but ``noexec``; a
  ``/dev`` with only null, zero, full, random and urandom; a fresh ``/proc``
  of the new PID namespace; a 16 MiB ``/tmp`` unless the scratch directory
  is under ``/tmp`` (``TMPDIR`` is the scratch directory either way);
- ``chroot``s into it, and runs the worker entry through ``setpriv`` with an
  empty capability bounding set and ``no_new_privs``: the task cannot mount,
  chroot, create devices or regain privileges, so the read-only binds hold.

The network namespace has only a loopback interface, down: every connect
fails. ``process`` isolation runs the same entry without namespaces (crash,
memory and deadline containment, and no capabilities through ``setpriv`` when
it is installed); the daemon's environment is never passed on, so no key or
password reaches task code in either mode.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Isolation = Literal["namespace", "process"]


class IsolationUnavailable(Exception):
    """This machine cannot start a namespace-isolated worker (the reason in one line)."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything the worker process needs, passed to it as JSON on its command line.

    ``base``: a private directory of the daemon's holding ``scratch`` (shared
    with the worker, where tensor files go) and ``root`` (the jail's mount
    point). ``read_only``: host paths the task may read. ``python_path``:
    extra import directories (also bound read-only). ``memory_bytes``: the
    worker's address-space limit (RLIMIT_AS). ``threads``: torch threads (0:
    torch's default). ``device``: where task code should place its tensors.
    """

    isolation: Isolation
    base: str
    read_only: tuple[str, ...] = ()
    python_path: tuple[str, ...] = ()
    memory_bytes: int = 4 << 30
    threads: int = 0
    device: str = "cpu"

    @property
    def scratch(self) -> Path:
        return Path(self.base) / "scratch"

    @property
    def root(self) -> Path:
        return Path(self.base) / "root"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        d = json.loads(text)
        d["read_only"] = tuple(d["read_only"])
        d["python_path"] = tuple(d["python_path"])
        return cls(**d)


# setpriv arguments: no capabilities now or after any exec, no setuid gains
DROP_PRIVILEGES = ("--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--")


def unshare_flags() -> list[str]:
    flags = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]
    if os.geteuid() != 0:
        flags.append("--map-root-user")
    return flags


def command(spec: WorkerSpec) -> list[str]:
    """The worker's command line for this spec."""
    if spec.isolation == "process":
        entry = [sys.executable, "-I", "-m", "flocknode.worker.entry", spec.to_json()]
        setpriv = shutil.which("setpriv")
        return [setpriv, *DROP_PRIVILEGES, *entry] if setpriv else entry
    unshare = shutil.which("unshare")
    if unshare is None:
        raise IsolationUnavailable("the 'unshare' program (util-linux) is not installed")
    jail = [sys.executable, "-I", "-m", "flocknode.worker.jail", spec.to_json()]
    return [unshare, *unshare_flags(), *jail]


def worker_env(spec: WorkerSpec) -> dict[str, str]:
    """The worker's whole environment: nothing of the daemon's (keys, passwords) is passed."""
    scratch = str(spec.scratch)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def task_import_path(task: str) -> tuple[str, ...]:
    """The directory the worker must import a ``module:attr`` task from (bound
    read-only and put on its ``sys.path``); empty for a built-in task or a module
    of the installed environment, which the jail binds anyway.

    Found with ``importlib.util.find_spec`` of the top-level name, which runs
    none of the task's code.
    """
    module, sep, _ = task.partition(":")
    if not sep:
        return ()
    top = module.split(".")[0]
    if top == "flocknode":
        return ()
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ()  # the task does not resolve: the worker says so in one line
    origin = found.origin if found is not None else None
    if found is None or not found.has_location or origin is None:
        return ()
    where = Path(origin).parent
    if found.submodule_search_locations:  # a package: its parent holds it
        where = where.parent
    base = {Path(sys.prefix), Path(sys.base_prefix)}
    if any(b == where or b in where.parents for b in base):
        return ()
    return (str(where),)


@functools.cache
def probe() -> None:
    """Check once per process that namespaces can be created here, else ``IsolationUnavailable``."""
    unshare = shutil.which("unshare")
    setpriv = shutil.which("setpriv")
    if unshare is None or setpriv is None:
        raise IsolationUnavailable("'unshare' and 'setpriv' (util-linux) are needed")
    try:
        done = subprocess.run(
            [unshare, *unshare_flags(), "true"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise IsolationUnavailable(f"cannot run unshare: {e}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise IsolationUnavailable(f"cannot create network/mount/PID namespaces ({why})")
