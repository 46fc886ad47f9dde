"""Task packages: the canonical archive, its hash, safe unpacking, the cache, the import."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import zipfile
from pathlib import Path

import pytest

from flocknode.learning.factory import PluginError
from flocknode.learning.models import load_task
from flocknode.learning.package import (
    MAX_PACKAGE_BYTES,
    PACKAGE_MAGIC,
    PackageCache,
    PackageError,
    build_package,
    encode_archive,
    parse_archive,
    unpack_archive,
)


def raw_archive(entries: list[tuple[bytes, bytes]], count: int | None = None) -> bytes:
    """An archive laid out by hand (no checks), to feed the parser hostile ones."""
    out = [struct.pack(">8sBI", PACKAGE_MAGIC, 1, len(entries) if count is None else count)]
    for path, data in entries:
        out += [struct.pack(">H", len(path)), path, struct.pack(">Q", len(data)), data]
    return b"".join(out)


def test_hash_is_deterministic_and_ignores_bytecode_and_mtimes(pkg: Path) -> None:
    a = build_package(pkg)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (pkg / "stray.pyc").write_bytes(b"x")
    os.utime(pkg / "task.py", (1, 1))
    b = build_package(pkg)
    assert a.archive == b.archive and a.ref == b.ref
    assert a.ref == "sha256:" + hashlib.sha256(a.archive).hexdigest()
    # a package directory goes in under its own name: the tree is a sys.path entry
    assert [p for p, _ in a.files] == ["example_task/__init__.py", "example_task/task.py"]
    # the parent directory (a sys.path root holding the package) gives the same archive
    assert build_package(pkg.parent).archive == a.archive


@pytest.mark.parametrize("change", ["content", "rename", "add", "empty_file"])
def test_hash_changes_with_content_paths_and_files(pkg: Path, change: str) -> None:
    before = build_package(pkg).ref
    if change == "content":
        (pkg / "task.py").write_text((pkg / "task.py").read_text() + "\n# one more line\n")
    elif change == "rename":
        (pkg / "task.py").rename(pkg / "task2.py")
    elif change == "add":
        (pkg / "data").mkdir()
        (pkg / "data" / "notes.txt").write_text("x")
    else:
        (pkg / "empty.txt").write_bytes(b"")
    assert build_package(pkg).ref != before


def test_single_module_wheel_and_archive_inputs(tmp_path: Path, pkg: Path) -> None:
    mod = tmp_path / "mytask.py"
    mod.write_text("TASK = None\n")
    assert [p for p, _ in build_package(mod).files] == ["mytask.py"]
    whl = tmp_path / "example_task-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for f in sorted(pkg.iterdir()):
            z.write(f, f"example_task/{f.name}")
    # a wheel counts as the tree it installs: the same files, the same hash
    assert build_package(whl).ref == build_package(pkg).ref
    archive = tmp_path / "example.flockpkg"
    archive.write_bytes(build_package(pkg).archive)
    assert build_package(archive).ref == build_package(pkg).ref


def test_symlinks_inside_are_followed_and_leaving_ones_refused(tmp_path: Path, pkg: Path) -> None:
    (pkg / "alias.py").symlink_to(pkg / "task.py")
    files = dict(parse_archive(build_package(pkg).archive))
    assert files["example_task/alias.py"] == (pkg / "task.py").read_bytes()
    outside = tmp_path / "secret.txt"
    outside.write_text("key")
    (pkg / "leak.txt").symlink_to(outside)
    with pytest.raises(PackageError, match=r"leak\.txt: a symlink that leaves"):
        build_package(pkg)
    (pkg / "leak.txt").unlink()
    (pkg / "subdir").symlink_to(tmp_path)
    with pytest.raises(PackageError, match="subdir: a symlink to a directory"):
        build_package(pkg)


def test_missing_or_foreign_input_is_one_line_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="nope: cannot read the task package"):
        build_package(tmp_path / "nope")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    with pytest.raises(PackageError, match=r"junk\.bin: not a package"):
        build_package(junk)
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"PK not a zip")
    with pytest.raises(PackageError, match=r"bad\.whl: not a readable wheel"):
        build_package(bad)


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([(b"/etc/passwd", b"x")], "unsafe path"),
        ([(b"../evil.py", b"x")], "unsafe path"),
        ([(b"a/../../evil.py", b"x")], "unsafe path"),
        ([(b"a//b.py", b"x")], "unsafe path"),
        ([(b"a\\..\\b.py", b"x")], "unsafe path"),
        ([(b"./a.py", b"x")], "unsafe path"),
        ([(b"a\x00.py", b"x")], "unsafe path"),
        ([(b"b.py", b"x"), (b"a.py", b"x")], "out of order"),
        ([(b"a.py", b"x"), (b"a.py", b"y")], "out of order or repeated"),
        ([(b"a", b"x"), (b"a/b.py", b"x")], "both a file and a directory"),
        ([(b"\xff.py", b"x")], "not UTF-8"),
        ([(b"a/__pycache__/t.cpython-311.pyc", b"x")], "is bytecode"),
        ([(b"t.pyc", b"x")], "is bytecode"),
    ],
)
def test_hostile_archives_are_refused(tmp_path: Path, entries: list, why: str) -> None:
    with pytest.raises(PackageError, match=why):
        unpack_archive(raw_archive(entries), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even a temp dir


def test_truncated_oversized_and_trailing_archives_are_refused(tmp_path: Path) -> None:
    good = raw_archive([(b"a.py", b"print(1)")])
    assert parse_archive(good) == [("a.py", b"print(1)")]
    with pytest.raises(PackageError, match="truncated"):
        parse_archive(good[:-1])
    with pytest.raises(PackageError, match="after the last file"):
        parse_archive(good + b"!")
    with pytest.raises(PackageError, match="truncated"):
        parse_archive(raw_archive([(b"a.py", b"x")], count=2))
    with pytest.raises(PackageError, match="0 files"):
        parse_archive(raw_archive([]))
    with pytest.raises(PackageError, match="larger than"):
        parse_archive(good + bytes(MAX_PACKAGE_BYTES))
    huge_size = good[: -len(b"print(1)") - 8] + struct.pack(">Q", 2**63) + b"print(1)"
    with pytest.raises(PackageError, match="truncated"):
        parse_archive(huge_size)
    with pytest.raises(PackageError, match="not a package archive"):
        parse_archive(b"NOTAPKG!" + good[8:])


def test_encode_refuses_what_parse_would(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="unsafe path"):
        encode_archive([("../x.py", b"")])
    with pytest.raises(PackageError, match="no files"):
        encode_archive([])


def test_cache_installs_checks_and_repairs(tmp_path: Path, pkg: Path) -> None:
    p = build_package(pkg)
    cache = PackageCache(tmp_path / "packages")
    assert cache.checked_dir(p.digest) is None and cache.path(p.digest) is None
    d = cache.install(p.archive)
    assert (d / "example_task" / "task.py").read_bytes() == (pkg / "task.py").read_bytes()
    assert cache.checked_dir(p.digest) == d
    assert cache.path(p.digest) == cache.archive_path(p.digest)  # served to members
    planted = d / "example_task" / "__pycache__" / "task.cpython-311.pyc"
    planted.parent.mkdir()  # what importing leaves: the tree still checks out ...
    planted.write_bytes(b"not what the hash covers")
    assert cache.checked_dir(p.digest) == d
    assert not planted.parent.exists()  # ... and the unhashed bytecode is gone
    (d / "example_task" / "task.py").write_text("TASK = 'tampered'\n")
    assert cache.checked_dir(p.digest) == d  # unpacked again from the archive
    assert (d / "example_task" / "task.py").read_bytes() == (pkg / "task.py").read_bytes()
    cache.archive_path(p.digest).write_bytes(b"garbage")
    (d / "example_task" / "task.py").write_text("TASK = 'tampered'\n")
    assert cache.checked_dir(p.digest) is None  # neither the tree nor the archive checks out


@pytest.mark.usefixtures("fresh_modules")
def test_load_task_imports_only_from_the_package_tree(tmp_path: Path, pkg: Path) -> None:
    d = PackageCache(tmp_path / "packages").install(build_package(pkg).archive)
    task = load_task("example_task:TASK", d)
    assert task.name == "rings"
    assert Path(sys.modules["example_task"].__file__ or "").is_relative_to(d)
    with pytest.raises(PluginError, match="the task package has no module 'other'"):
        load_task("other:TASK", d)


@pytest.mark.usefixtures("fresh_modules")
def test_load_task_refuses_a_module_imported_from_elsewhere(tmp_path: Path, pkg: Path) -> None:
    d = PackageCache(tmp_path / "packages").install(build_package(pkg).archive)
    sys.path.insert(0, str(pkg.parent))
    import example_task  # noqa: F401  (the unchecked copy, imported first)

    with pytest.raises(PluginError, match="already imported from outside the task package"):
        load_task("example_task:TASK", d)
