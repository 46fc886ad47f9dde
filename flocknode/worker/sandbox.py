"""How the task worker is started, and the jail it runs in (Linux namespaces).

``namespace`` isolation (the default) starts the worker as

    unshare --net --mount --pid --fork --kill-child [--map-root-user] \\
        python -I -m flocknode.worker.sandbox SPEC

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
memory and deadline containment only); the daemon's environment is never
passed on, so no key or password reaches task code in either mode.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Isolation = Literal["namespace", "process"]

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_ETC_FILES = ("ld.so.cache", "passwd", "group", "localtime", "nsswitch.conf")
_DEV_FILES = ("null", "zero", "full", "random", "urandom")


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


def unshare_flags() -> list[str]:
    flags = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]
    if os.geteuid() != 0:
        flags.append("--map-root-user")
    return flags


def command(spec: WorkerSpec) -> list[str]:
    """The worker's command line for this spec."""
    if spec.isolation == "process":
        return [sys.executable, "-I", "-m", "flocknode.worker.entry", spec.to_json()]
    unshare = shutil.which("unshare")
    if unshare is None:
        raise IsolationUnavailable("the 'unshare' program (util-linux) is not installed")
    return [unshare, *unshare_flags(), sys.executable, "-I", "-m", __name__, spec.to_json()]


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


# -- inside the namespaces (root of the new user/mount namespace) -----------------


def _libc_mount(
    src: str | None, dst: str, fstype: str | None, flags: int, data: str | None
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    enc = [None if v is None else v.encode() for v in (src, dst, fstype, data)]
    if libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")


def _bind(
    root: Path,
    host: Path,
    bound: list[Path],
    *,
    writable: bool = False,
    noexec: bool = False,
    device: bool = False,
) -> None:
    """Bind ``host`` at the same path under ``root`` (skipped if a bound directory holds it)."""
    if any(b == host or b in host.parents for b in bound):
        return
    bound.append(host)
    target = root / str(host).lstrip("/")
    if host.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    _libc_mount(str(host), str(target), None, _MS_BIND, None)
    flags = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | (0 if device else _MS_NODEV)
    flags |= 0 if writable else _MS_RDONLY
    flags |= _MS_NOEXEC if noexec else 0
    _libc_mount(None, str(target), None, flags, None)


def _python_dirs() -> list[Path]:
    import flocknode

    dirs = {Path(sys.prefix), Path(sys.base_prefix), Path(flocknode.__file__).parent}
    dirs.update(Path(p) for p in sys.path if p and Path(p).is_dir())
    exe = Path(sys.executable)
    dirs.update({exe.parent, exe.resolve().parent.parent})
    # a directory inside another bound one needs no bind of its own
    return [d for d in sorted(dirs) if not any(o != d and o in d.parents for o in dirs)]


def jail(spec: WorkerSpec) -> None:
    """Build the jail at ``spec.root``, enter it, and exec the worker entry without privileges."""
    root = spec.root
    bound: list[Path] = []
    _libc_mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    _libc_mount("tmpfs", str(root), "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            (root / top).symlink_to(os.readlink(host))
        elif host.is_dir():
            _bind(root, host, bound)
    _bind(root, Path("/usr"), bound)
    (root / "etc").mkdir()
    for name in _ETC_FILES:
        f = Path("/etc") / name
        if f.is_symlink():
            (root / "etc" / name).symlink_to(os.readlink(f))
        elif f.is_file():
            _bind(root, f, bound)
    for d in _python_dirs():
        _bind(root, d, bound)
    for p in (*spec.read_only, *spec.python_path):
        if Path(p).exists():
            _bind(root, Path(p).resolve(), bound)
    _bind(root, spec.scratch, bound, writable=True, noexec=True)
    (root / "dev").mkdir()
    for name in _DEV_FILES:
        _bind(root, Path("/dev") / name, bound, writable=True, noexec=True, device=True)
    (root / "proc").mkdir()
    _libc_mount("proc", str(root / "proc"), "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    if not (root / "tmp").exists():  # else the scratch directory is under /tmp
        (root / "tmp").mkdir()
        tmp_flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        _libc_mount("tmpfs", str(root / "tmp"), "tmpfs", tmp_flags, "size=16m,mode=1777")
    _libc_mount(None, str(root), None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    os.chroot(root)
    os.chdir(spec.scratch)
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None:
        raise IsolationUnavailable("setpriv not found inside the jail")
    argv = [setpriv, "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    argv += [sys.executable, "-I", "-m", "flocknode.worker.entry", spec.to_json()]
    os.execve(setpriv, argv, worker_env(spec))


def main() -> None:
    try:
        jail(WorkerSpec.from_json(sys.argv[1]))
    except Exception as e:  # one line for the daemon's log, then exit
        sys.stderr.write(f"worker jail: {e}\n")
        sys.exit(70)


if __name__ == "__main__":
    main()
