"""The worker's jail, built inside the new namespaces (see ``flocknode.worker.sandbox``).

    python -I -m flocknode.worker.jail SPEC

runs as root of the new mount namespace: it mounts the jail, ``chroot``s into
it and execs the worker entry through ``setpriv`` without capabilities.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
from pathlib import Path

from flocknode.worker.sandbox import DROP_PRIVILEGES, IsolationUnavailable, WorkerSpec, worker_env

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_ETC_FILES = ("ld.so.cache", "passwd", "group", "localtime", "nsswitch.conf")
_DEV_FILES = ("null", "zero", "full", "random", "urandom")


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
    if spec.device.startswith("cuda"):  # the GPU's device files and what CUDA reads in /sys
        for dev in sorted(Path("/dev").glob("nvidia*")):
            if not dev.is_dir():
                _bind(root, dev, bound, writable=True, noexec=True, device=True)
        _bind(root, Path("/sys"), bound)
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
    argv = [
        setpriv,
        *DROP_PRIVILEGES,
        sys.executable,
        "-I",
        "-m",
        "flocknode.worker.entry",
        spec.to_json(),
    ]
    os.execve(setpriv, argv, worker_env(spec))


def main() -> None:
    try:
        jail(WorkerSpec.from_json(sys.argv[1]))
    except Exception as e:  # one line for the daemon's log, then exit
        sys.stderr.write(f"worker jail: {e}\n")
        sys.exit(70)


if __name__ == "__main__":
    main()
