"""A task's base model: a local directory pinned by a content hash in the task's settings.

Some tasks start from weights nobody trains in the task (a downloaded language
model that LoRA adapters are fitted to). The task's settings carry the
directory's hash (``training.base_model_hash``, so it is part of ``configHash``);
each participant keeps their own copy and names it in ``[task] base_model``.
A node hashes its copy at start and refuses to run on a different one, so the
weights that are not exchanged are the same on every node.

The hash (``dir_hash``): SHA-256 over the directory's regular files (symbolic
links followed, as in a Hugging Face cache snapshot), in sorted order of their
relative POSIX paths, each contributing

    len(path) as 4 bytes big-endian || path (UTF-8) || len(content) as 8 bytes big-endian || content

Files and folders whose name starts with ``.`` are left out: download tools
keep their own bookkeeping there (``.cache/huggingface/``), which differs
between two copies of the same model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from flocknode.learning.factory import PluginError
from flocknode.learning.task import DataError, describe

_CHUNK = 1 << 20


def model_files(root: Path) -> list[tuple[str, Path]]:
    """``(relative POSIX path, file)`` for every file that counts, sorted by path bytes."""
    root = Path(root)
    if not root.is_dir():
        what = "not a directory" if root.exists() else "no such directory"
        raise DataError(f"{root}: base model: {what}")
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                out.append((path.relative_to(root).as_posix(), path))
    out.sort(key=lambda item: item[0].encode("utf-8"))
    if not out:
        raise DataError(f"{root}: base model: the directory has no files")
    return out


def dir_hash(root: Path) -> str:
    """The base model directory's content hash, 64 lowercase hex digits."""
    h = hashlib.sha256()
    for rel, path in model_files(root):
        name = rel.encode("utf-8")
        try:
            size = path.stat().st_size
            h.update(len(name).to_bytes(4, "big") + name + size.to_bytes(8, "big"))
            with path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        except OSError as e:
            raise DataError(f"{path}: base model: cannot read: {e.strerror or e}") from None
    return h.hexdigest()


def check_base_model(path: Path, expected: str) -> None:
    """``DataError`` (one line) unless the directory hashes to ``expected``."""
    have = dir_hash(path)
    if have != expected:
        raise DataError(
            f"{path}: base model hash {have[:16]}... differs from the task's "
            f"training.base_model_hash {expected[:16]}... (a different model or revision?)"
        )


def attach_base_model(task: Any, expected: str, path: Path | None) -> None:
    """Give ``task`` its checked base model directory, if its settings name one.

    A task that starts from a base model has a ``use_base_model(path)`` method.
    Settings without a hash and a task without the method need nothing; any
    other combination, a missing ``[task] base_model`` or a directory with
    another hash is one line (exit code 2).
    """
    use = getattr(task, "use_base_model", None)
    name = describe(task)
    if not expected:
        if callable(use):
            raise PluginError(
                f"task {name!r} starts from a base model: its settings must give "
                "training.base_model_hash (flocknode task create --base-model DIR fills it in)"
            )
        return
    if not callable(use):
        raise PluginError(
            f"the settings give training.base_model_hash, but task {name!r} takes no base model"
        )
    if path is None or not str(path):
        raise DataError(
            f"[task] base_model is not set: task {name!r} starts from the base model "
            f"{expected[:16]}...; set it to the directory of your copy"
        )
    check_base_model(Path(path), expected)
    use(Path(path))
