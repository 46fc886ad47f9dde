"""Task packages: a task's code as one canonical archive, named by its SHA-256.

docs/protocol.md, "Task packages", is the spec. In short: a package is a tree
of files that goes on ``sys.path`` (the task's ``module:attr`` is inside it).
Its canonical archive is

    b"FLOCKPKG" | version u8 (1) | file count u32
    then per file, paths in strictly increasing byte order:
        path length u16 | path (UTF-8, relative POSIX) | size u64 | the bytes

(big-endian integers; nothing after the last file). The package hash is the
SHA-256 of those bytes, written ``sha256:<64 hex>`` in the task settings
(``training.task_package``); nodes serve and fetch the archive by that hash
like any content. Nothing in it but paths and bytes: no times, owners, modes
or links, so the same files always give the same hash.

``build_package`` makes the archive from what a task's creator or a
participant has: a package directory (one with ``__init__.py``: it goes in
under its own name), a ``sys.path`` directory (its contents go in as they
are), a single ``.py`` module, a wheel (its files), or an archive file. Bytecode
(``__pycache__``, ``*.pyc``, ``*.pyo``) is left out; a symlink is followed
only to a regular file inside the tree, anything else is refused.
``parse_archive`` refuses what could escape the directory it unpacks into
(absolute paths, ``..``, empty parts, backslashes, a path that is both a file
and a directory), bytecode, and anything over the bounds below. ``PackageCache`` keeps
verified archives and their unpacked trees in the node's data dir; code is
imported only from a tree whose hash it has just checked (``checked_dir``),
after the bytecode an earlier import left there is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flocknode.errors import FlockError

PACKAGE_MAGIC = b"FLOCKPKG"
PACKAGE_VERSION = 1
MAX_PACKAGE_BYTES = 64 << 20  # the whole archive; a fetch never accepts more
MAX_PACKAGE_FILES = 10_000
MAX_PATH_BYTES = 1024
HASH_PREFIX = "sha256:"
BUILTIN = "builtin"  # --task-package for a task whose code ships with flocknode

_HEADER = struct.Struct(">8sBI")
_PATH_LEN = struct.Struct(">H")
_SIZE = struct.Struct(">Q")
_HASH_TEXT = re.compile(r"^sha256:[0-9a-f]{64}$")
_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


class PackageError(FlockError):
    """A package that cannot be used: one line naming the file and the problem."""

    exit_code = 2


@dataclass(frozen=True)
class Package:
    """A canonical archive and its hash (``sha256:<hex>``)."""

    archive: bytes
    files: tuple[tuple[str, int], ...]  # (path, size) in archive order

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.archive).digest()

    @property
    def ref(self) -> str:
        return package_ref(self.digest)


def package_ref(digest: bytes) -> str:
    return HASH_PREFIX + digest.hex()


def is_package_ref(text: str) -> bool:
    return bool(_HASH_TEXT.match(text))


def ref_digest(ref: str) -> bytes:
    if not is_package_ref(ref):
        raise PackageError(f"{ref!r} is not a package hash (sha256:<64 hex digits>)")
    return bytes.fromhex(ref.removeprefix(HASH_PREFIX))


# -- the archive -----------------------------------------------------------------


def encode_archive(files: Iterable[tuple[str, bytes]], source: str = "package") -> bytes:
    """The canonical archive of ``(path, bytes)`` pairs (any order; sorted here)."""
    entries = sorted(((p.encode("utf-8"), p, data) for p, data in files), key=lambda e: e[0])
    if len(entries) > MAX_PACKAGE_FILES:
        raise PackageError(f"{source}: more than {MAX_PACKAGE_FILES} files")
    if not entries:
        raise PackageError(f"{source}: no files")
    out = [_HEADER.pack(PACKAGE_MAGIC, PACKAGE_VERSION, len(entries))]
    total = _HEADER.size
    seen: _Tree = _Tree(source)
    for raw, path, data in entries:
        seen.add(path, raw)
        total += _PATH_LEN.size + len(raw) + _SIZE.size + len(data)
        if total > MAX_PACKAGE_BYTES:
            raise PackageError(f"{source}: larger than {MAX_PACKAGE_BYTES} bytes")
        out += [_PATH_LEN.pack(len(raw)), raw, _SIZE.pack(len(data)), data]
    return b"".join(out)


def parse_archive(data: bytes, source: str = "package archive") -> list[tuple[str, bytes]]:
    """The files of a canonical archive; ``PackageError`` for anything else."""
    if len(data) > MAX_PACKAGE_BYTES:
        raise PackageError(f"{source}: larger than {MAX_PACKAGE_BYTES} bytes")
    if len(data) < _HEADER.size:
        raise PackageError(f"{source}: too short for a package archive")
    magic, version, count = _HEADER.unpack_from(data, 0)
    if magic != PACKAGE_MAGIC:
        raise PackageError(f"{source}: not a package archive")
    if version != PACKAGE_VERSION:
        raise PackageError(f"{source}: unsupported package archive version {version}")
    if not 0 < count <= MAX_PACKAGE_FILES:
        raise PackageError(f"{source}: {count} files (1 to {MAX_PACKAGE_FILES} allowed)")
    view = memoryview(data)
    pos = _HEADER.size
    files: list[tuple[str, bytes]] = []
    tree = _Tree(source)
    last = b""
    for _ in range(count):
        if pos + _PATH_LEN.size > len(data):
            raise PackageError(f"{source}: truncated")
        (n,) = _PATH_LEN.unpack_from(data, pos)
        pos += _PATH_LEN.size
        raw = bytes(view[pos : pos + n])
        pos += n
        if len(raw) != n or pos + _SIZE.size > len(data):
            raise PackageError(f"{source}: truncated")
        (size,) = _SIZE.unpack_from(data, pos)
        pos += _SIZE.size
        if size > len(data) - pos:
            raise PackageError(f"{source}: truncated")
        if files and raw <= last:
            raise PackageError(f"{source}: paths out of order or repeated at {raw!r}")
        try:
            path = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PackageError(f"{source}: a path is not UTF-8: {raw!r}") from None
        tree.add(path, raw)
        files.append((path, bytes(view[pos : pos + size])))
        pos += size
        last = raw
    if pos != len(data):
        raise PackageError(f"{source}: {len(data) - pos} bytes after the last file")
    return files


class _Tree:
    """Checks each path as it is added: safe, and never both a file and a directory."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def add(self, path: str, raw: bytes) -> None:
        check_path(path, raw, self.source)
        if _is_bytecode(path):
            raise PackageError(f"{self.source}: {path!r} is bytecode (packages hold sources)")
        if path in self.files or path in self.dirs:
            raise PackageError(f"{self.source}: {path!r} appears twice")
        parts = path.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d in self.files:
                raise PackageError(f"{self.source}: {d!r} is both a file and a directory")
            self.dirs.add(d)
        self.files.add(path)


def _is_bytecode(path: str) -> bool:
    return path.endswith(_SKIPPED_SUFFIXES) or any(
        part in _SKIPPED_DIRS for part in path.split("/")
    )


def check_path(path: str, raw: bytes, source: str) -> None:
    """A relative POSIX path that stays inside the directory it is unpacked into."""
    bad = (
        not path
        or len(raw) > MAX_PATH_BYTES
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
        or any(ord(c) < 0x20 for c in path)
    )
    if bad:
        raise PackageError(f"{source}: unsafe path {path!r} (relative, no '..', no '\\\\')")


# -- building a package from what the user has ------------------------------------


def build_package(path: Path) -> Package:
    """The canonical package of a directory, ``.py`` module, wheel or archive file."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise PackageError(f"{path}: cannot read the task package ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        prefix = path.resolve().name + "/" if (path / "__init__.py").is_file() else ""
        files = [(prefix + rel, data) for rel, data in tree_files(path)]
    elif not stat.S_ISREG(st.st_mode):
        raise PackageError(f"{path}: not a file or directory")
    elif path.suffix == ".whl":
        files = _wheel_files(path)
    elif path.suffix == ".py":
        files = [(path.name, _read(path))]
    else:
        data = _read(path)
        if not data.startswith(PACKAGE_MAGIC):
            raise PackageError(
                f"{path}: not a package (a directory, a .py module, a .whl or a package archive)"
            )
        parsed = parse_archive(data, str(path))
        return Package(data, tuple((p, len(b)) for p, b in parsed))
    archive = encode_archive(files, str(path))
    return Package(archive, tuple(sorted(((p, len(b)) for p, b in files), key=_path_key)))


def tree_files(root: Path) -> list[tuple[str, bytes]]:
    """Every file under ``root`` as (relative POSIX path, bytes), bytecode left out.

    A symlink counts as the regular file it points to if that is inside
    ``root``; a symlink to a directory or out of ``root`` is refused, as are
    sockets, pipes and devices.
    """
    root = Path(root)
    top = root.resolve()
    out: list[tuple[str, bytes]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                raise PackageError(f"{here / d}: a symlink to a directory (copy it instead)")
            if d in _SKIPPED_DIRS:
                dirnames.remove(d)
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(_SKIPPED_SUFFIXES):
                continue
            p = here / name
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(top) or not target.is_file():
                    raise PackageError(f"{p}: a symlink that leaves the package directory")
            elif not stat.S_ISREG(p.lstat().st_mode):
                raise PackageError(f"{p}: not a regular file")
            rel = p.relative_to(root).as_posix()
            out.append((rel, _read(p)))
            if sum(len(b) for _, b in out) > MAX_PACKAGE_BYTES:
                raise PackageError(f"{root}: larger than {MAX_PACKAGE_BYTES} bytes")
    return out


def _wheel_files(path: Path) -> list[tuple[str, bytes]]:
    """A wheel's files: what installing a pure-Python wheel puts on ``sys.path``."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if not i.is_dir()]
            if sum(i.file_size for i in infos) > MAX_PACKAGE_BYTES:
                raise PackageError(f"{path}: unpacks to more than {MAX_PACKAGE_BYTES} bytes")
            files = []
            for i in infos:
                if _is_bytecode(i.filename):
                    continue
                if stat.S_ISLNK(i.external_attr >> 16):
                    raise PackageError(f"{path}: {i.filename!r} is a symlink")
                files.append((i.filename, z.read(i)))
            return files
    except (zipfile.BadZipFile, OSError) as e:
        raise PackageError(f"{path}: not a readable wheel ({e})") from None


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError as e:
        raise PackageError(f"{p}: cannot read ({e.strerror})") from None


def _path_key(item: tuple[str, int]) -> bytes:
    return item[0].encode("utf-8")


# -- unpacking and the node's cache -----------------------------------------------


def unpack_archive(data: bytes, dest: Path, source: str = "package archive") -> None:
    """Unpack a canonical archive into the new directory ``dest`` (all or nothing).

    Only directories and regular files are created, inside a fresh temporary
    directory next to ``dest`` that is renamed into place at the end.
    """
    files = parse_archive(data, source)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for path, content in files:
            target = tmp.joinpath(*PurePosixPath(path).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(target, flags, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class PackageCache:
    """Verified package archives (``<hex>.pkg``) and their trees (``<hex>/``) in one dir.

    As a content source (``path``) it offers the archives it holds, so a node
    serves its task's package to members that lack it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def archive_path(self, digest: bytes) -> Path:
        return self.root / f"{digest.hex()}.pkg"

    def dir_path(self, digest: bytes) -> Path:
        return self.root / digest.hex()

    def path(self, content_id: bytes) -> Path | None:
        if len(content_id) != 32:
            return None
        p = self.archive_path(content_id)
        return p if p.is_file() else None

    def install(self, archive: bytes, source: str = "package archive") -> Path:
        """Store an archive and unpack it (a tree already there is checked, redone if bad).

        Only a well-formed archive is kept: the cache never serves anything else.
        """
        parse_archive(archive, source)
        digest = hashlib.sha256(archive).digest()
        self.root.mkdir(parents=True, exist_ok=True)
        ap = self.archive_path(digest)
        if not ap.is_file() or hashlib.sha256(ap.read_bytes()).digest() != digest:
            fd, tmp = tempfile.mkstemp(prefix=".incoming.", dir=self.root)
            with os.fdopen(fd, "wb") as f:
                f.write(archive)
            os.replace(tmp, ap)
        d = self.dir_path(digest)
        if d.exists() and self._tree_digest(d) != digest:
            shutil.rmtree(d)
        if not d.exists():
            unpack_archive(archive, d, source)
        _drop_bytecode(d)
        return d

    def checked_dir(self, digest: bytes) -> Path | None:
        """The unpacked tree of ``digest`` if it is here and still hashes to it.

        A tree that does not (edited, half deleted) is unpacked again from the
        archive if that checks out; otherwise None.
        """
        d = self.dir_path(digest)
        if d.is_dir() and self._tree_digest(d) == digest:
            _drop_bytecode(d)
            return d
        ap = self.archive_path(digest)
        with contextlib.suppress(OSError):
            data = ap.read_bytes()
            if hashlib.sha256(data).digest() == digest:
                with contextlib.suppress(PackageError):
                    return self.install(data, str(ap))
        return None

    @staticmethod
    def _tree_digest(d: Path) -> bytes | None:
        try:
            return hashlib.sha256(encode_archive(tree_files(d), str(d))).digest()
        except (PackageError, OSError):
            return None


def _drop_bytecode(d: Path) -> None:
    """Delete the bytecode an earlier import left in a checked tree: it is the one
    thing the tree's hash does not cover, so none of it is ever loaded again."""
    for dirpath, dirnames, filenames in os.walk(d):
        for name in dirnames:
            if name in _SKIPPED_DIRS:
                shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
        dirnames[:] = [n for n in dirnames if n not in _SKIPPED_DIRS]
        for name in filenames:
            if name.endswith(_SKIPPED_SUFFIXES):
                (Path(dirpath) / name).unlink(missing_ok=True)
