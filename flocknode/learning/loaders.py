"""Built-in loaders for a participant's data files: CSV, image folders, JSONL text.

Each reads a file or a directory (its matching files in sorted name order, so
the sample order, and with it the private split, depends only on the files)
and raises ``DataError`` with one line naming the file and the problem: a
missing path, a missing column, a value that is not a number, an unreadable
or empty file, a label the task does not know.

- ``load_csv(path, features, label, classes)``: a header row, then one sample
  per row; the task names the feature columns and the label column, and the
  labels it knows (row order kept, files in name order).
- ``load_image_folder(path, classes, size, mode)``: one sub-folder per class
  named as the class, holding PNG or JPEG files; each image is converted to
  ``mode`` ("L" grey or "RGB") and resized to ``size`` (Pillow).
- ``load_jsonl(path, kind)``: one JSON object a line, as ``text``
  (``{"text": ...}``), ``instruction`` (``{"instruction": ..., "response":
  ...}`` with an optional ``"input"``) or ``chat`` (``{"messages": [{"role":
  ..., "content": ...}, ...]}``), or ``auto`` (the first record's keys
  decide); returns the records.

The writers (``write_csv``, ``write_image_folder``, ``write_jsonl``) are the
inverse, used by testers to lay out each node's shard.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from flocknode.learning.task import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
JsonlKind = Literal["text", "instruction", "chat"]


def data_files(path: Path, suffixes: Sequence[str]) -> list[Path]:
    """``path`` itself if it is a file, else its files with these suffixes (sorted, recursive)."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in tuple(suffixes)
    )
    if not files:
        raise DataError(f"{path}: no {'/'.join(suffixes)} files in this directory")
    return files


def load_csv(
    path: Path, features: Sequence[str], label: str, classes: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Feature rows (float64) and label indices into ``classes`` from CSV file(s)."""
    index = {c: i for i, c in enumerate(classes)}
    xs: list[list[float]] = []
    ys: list[int] = []
    for file in data_files(Path(path), (".csv",)):
        try:
            with file.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                missing = [c for c in (*features, label) if c not in header]
                if not header:
                    raise DataError(f"{file}: empty file (expected a header row)")
                if missing:
                    raise DataError(f"{file}: no column {missing[0]!r} (the task needs it)")
                before = len(ys)
                for row in reader:
                    line = reader.line_num
                    raw = (row.get(label) or "").strip()
                    if raw not in index:
                        raise DataError(f"{file}:{line}: label {raw!r} is not one the task knows")
                    try:
                        values = [float(row[c]) for c in features]
                    except (TypeError, ValueError):
                        raise DataError(f"{file}:{line}: a feature is not a number") from None
                    if not all(math.isfinite(v) for v in values):
                        raise DataError(f"{file}:{line}: a feature is not finite")
                    xs.append(values)
                    ys.append(index[raw])
                if len(ys) == before:
                    raise DataError(f"{file}: no data rows")
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{file}: cannot read: {_reason(e)}") from None
    return np.asarray(xs, dtype=np.float64).reshape(len(ys), len(features)), np.asarray(
        ys, dtype=np.int64
    )


def write_csv(
    path: Path,
    x: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    features: Sequence[str],
    label: str,
    classes: Sequence[str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*features, label])
        for row, c in zip(x.tolist(), y.tolist(), strict=True):
            w.writerow([_number(v) for v in row] + [classes[c]])


def load_image_folder(
    path: Path, classes: Sequence[str], size: tuple[int, int], mode: str = "L"
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Images (n, height, width[, channels], uint8) and label indices from class folders."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}")
    index = {c: i for i, c in enumerate(classes)}
    images: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    for sub in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not sub.is_dir():
            raise DataError(f"{sub}: expected only one sub-folder per class here")
        if sub.name not in index:
            raise DataError(f"{sub}: label {sub.name!r} is not one the task knows")
        for file in sorted(p for p in sub.iterdir() if p.is_file()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{file}: not a PNG or JPEG file")
            try:
                with Image.open(file) as img:
                    pic = img.convert(mode)
                    if pic.size != (size[1], size[0]):
                        pic = pic.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    images.append(np.asarray(pic, dtype=np.uint8))
            except (OSError, UnidentifiedImageError, ValueError) as e:
                raise DataError(f"{file}: cannot read the image: {_reason(e)}") from None
            labels.append(index[sub.name])
    if not labels:
        raise DataError(f"{root}: no images (expected one sub-folder per class)")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def write_image_folder(
    path: Path, images: npt.NDArray[np.uint8], y: npt.NDArray[np.int64], classes: Sequence[str]
) -> None:
    from PIL import Image

    for i, (img, c) in enumerate(zip(images, y.tolist(), strict=True)):
        d = path / classes[c]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.png")


def load_jsonl(path: Path, kind: JsonlKind | Literal["auto"]) -> list[dict[str, Any]]:
    """The records of JSONL file(s) in the ``kind`` format, each checked.

    ``"auto"``: the first record's keys decide the format for every record
    (``jsonl_kind``).
    """
    out: list[dict[str, Any]] = []
    for file in data_files(Path(path), (".jsonl",)):
        before = len(out)
        try:
            with file.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        raise DataError(f"{file}:{n}: not a JSON object") from None
                    if kind == "auto":
                        kind = jsonl_kind(rec)
                    problem = _jsonl_problem(rec, kind)
                    if problem:
                        raise DataError(f"{file}:{n}: {problem}")
                    out.append(rec)
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{file}: cannot read: {_reason(e)}") from None
        if len(out) == before:
            raise DataError(f"{file}: no records")
    return out


def jsonl_kind(rec: Any) -> JsonlKind:
    """A record's format by its keys: ``messages`` chat, ``instruction``, else plain text."""
    if isinstance(rec, dict) and "messages" in rec:
        return "chat"
    if isinstance(rec, dict) and "instruction" in rec:
        return "instruction"
    return "text"


def render_jsonl(rec: dict[str, Any], kind: JsonlKind) -> str:
    """One training text of a checked record (a plain layout; tasks may format their own)."""
    if kind == "text":
        return str(rec["text"])
    if kind == "instruction":
        prompt = rec["instruction"] + (f"\n{rec['input']}" if rec.get("input") else "")
        return f"### Instruction:\n{prompt}\n### Response:\n{rec['response']}"
    return "\n".join(f"<|{m['role']}|>{m['content']}" for m in rec["messages"])


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _jsonl_problem(rec: Any, kind: JsonlKind) -> str:
    if not isinstance(rec, dict):
        return "not a JSON object"
    if kind == "text":
        return "" if isinstance(rec.get("text"), str) else 'no "text" string'
    if kind == "instruction":
        for key in ("instruction", "response"):
            if not isinstance(rec.get(key), str):
                return f'no "{key}" string'
        return "" if isinstance(rec.get("input", ""), str) else '"input" is not a string'
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return 'no "messages" list'
    for m in msgs:
        if not (
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
        ):
            return 'a message without "role" and "content" strings'
    return ""


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
