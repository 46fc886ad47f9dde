"""The built-in loaders: good files load in a fixed order, bad files are one line naming them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flocknode.learning import DataError, DigitsCNN, DigitsMLP, Learner, TrainingSettings
from flocknode.learning.loaders import (
    load_csv,
    load_image_folder,
    load_jsonl,
    render_jsonl,
    write_image_folder,
    write_jsonl,
)

CLASSES = ("cat", "dog")


def _csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_reads_the_named_columns_of_every_file_in_name_order(tmp_path: Path) -> None:
    _csv(tmp_path / "b.csv", "label,x,extra\ndog,2.5,z\n")
    _csv(tmp_path / "a.csv", "x,label\n1,cat\n-1e3,dog\n")
    _csv(tmp_path / "notes.txt", "ignored")
    x, y = load_csv(tmp_path, ["x"], "label", CLASSES)
    assert x.tolist() == [[1.0], [-1000.0], [2.5]] and y.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x,label\n1,cow\n", "a.csv:2: label 'cow' is not one the task knows"),
        ("x,y\n1,cat\n", "a.csv: no column 'label' (the task needs it)"),
        ("x,label\nabc,cat\n", "a.csv:2: a feature is not a number"),
        ("x,label\nnan,cat\n", "a.csv:2: a feature is not finite"),
        ("x,label\n", "a.csv: no data rows"),
        ("", "a.csv: empty file (expected a header row)"),
    ],
)
def test_bad_csv_is_one_line_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    f = _csv(tmp_path / "a.csv", text)
    with pytest.raises(DataError) as e:
        load_csv(tmp_path, ["x"], "label", CLASSES)
    assert str(e.value) == str(f.parent / problem) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        load_csv(tmp_path / "absent", ["x"], "label", CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.csv files"):
        load_csv(tmp_path / "empty", ["x"], "label", CLASSES)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match=r"bin\.csv: cannot read"):
        load_csv(tmp_path / "bin.csv", ["x"], "label", CLASSES)


def test_image_folders_load_resize_and_refuse_bad_files(tmp_path: Path) -> None:
    imgs = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4) * 7
    write_image_folder(tmp_path / "ok", imgs, np.array([1, 0]), CLASSES)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "ok" / "cat" / "big.jpeg")
    x, y = load_image_folder(tmp_path / "ok", CLASSES, (4, 4), "L")
    assert x.shape == (3, 4, 4) and y.tolist() == [0, 0, 1]
    assert np.array_equal(x[0], imgs[1]) and np.array_equal(x[2], imgs[0])  # PNG is lossless
    (tmp_path / "ok" / "cow").mkdir()
    with pytest.raises(DataError, match="cow: label 'cow' is not one the task knows"):
        load_image_folder(tmp_path / "ok", CLASSES, (4, 4))
    (tmp_path / "ok" / "cow").rmdir()
    (tmp_path / "ok" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot read the image"):
        load_image_folder(tmp_path / "ok", CLASSES, (4, 4))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path / "none", CLASSES, (4, 4))
    with pytest.raises(DataError, match="no such directory"):
        load_image_folder(tmp_path / "absent", CLASSES, (4, 4))


def test_jsonl_formats_and_their_errors(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t.jsonl", [{"text": "hello"}, {"text": "world"}])
    assert [r["text"] for r in load_jsonl(tmp_path / "t.jsonl", "text")] == ["hello", "world"]
    inst = [{"instruction": "Add", "input": "2+2", "response": "4"}]
    write_jsonl(tmp_path / "i" / "a.jsonl", inst)
    (rec,) = load_jsonl(tmp_path / "i", "instruction")
    assert render_jsonl(rec, "instruction").endswith("2+2\n### Response:\n4")
    chat = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    ]
    write_jsonl(tmp_path / "c.jsonl", chat)
    assert render_jsonl(load_jsonl(tmp_path / "c.jsonl", "chat")[0], "chat") == (
        "<|user|>hi\n<|assistant|>yo"
    )
    good = {"text": {"text": "ok"}, "instruction": inst[0], "chat": chat[0]}
    for kind, line, problem in [
        ("text", "{oops", "t.jsonl:2: not a JSON object"),
        ("text", json.dumps({"txt": 1}), 't.jsonl:2: no "text" string'),
        ("instruction", json.dumps({"instruction": "a"}), 't.jsonl:2: no "response" string'),
        ("chat", json.dumps({"messages": [{"role": "u"}]}), "t.jsonl:2: a message without"),
    ]:
        (tmp_path / "t.jsonl").write_text(json.dumps(good[kind]) + "\n" + line + "\n")
        with pytest.raises(DataError) as e:
            load_jsonl(tmp_path / "t.jsonl", kind)  # type: ignore[arg-type]
        assert str(e.value).startswith(str(tmp_path / problem)), str(e.value)
    (tmp_path / "t.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"t\.jsonl: no records"):
        load_jsonl(tmp_path / "t.jsonl", "text")


def test_digits_tasks_read_their_formats_and_refuse_out_of_range_pixels(tmp_path: Path) -> None:
    cnn = DigitsCNN()
    ref = cnn.reference_data().subset(range(40))
    cnn.write_data(tmp_path / "png", ref)
    back = cnn.load_data(tmp_path / "png")
    assert back.x.shape == (40, 1, 8, 8) and sorted(back.y.tolist()) == sorted(ref.y.tolist())
    assert float((back.x - back.x.round(decimals=2)).abs().max()) < 0.01
    _csv(tmp_path / "bad.csv", ",".join([f"p{i}" for i in range(64)] + ["label"]) + "\n")
    with open(tmp_path / "bad.csv", "a") as f:
        f.write(",".join(["17"] * 64 + ["3"]) + "\n")
    with pytest.raises(DataError, match=r"pixel values must be in 0\.\.16"):
        DigitsMLP().load_data(tmp_path / "bad.csv")
    with pytest.raises(DataError, match=r"nope: \[data\] path does not exist"):
        Learner.from_settings(TrainingSettings(task="digits-cnn"), tmp_path / "nope")
    assert torch.equal(DigitsMLP().reference_data().y[:40], ref.y)


def test_a_node_config_without_data_or_with_bad_data_is_one_line(tmp_path: Path) -> None:
    from flocknode.config import load_config
    from flocknode.errors import ConfigError
    from flocknode.learning import TaskSettings
    from flocknode.node import node_learner

    cfg_file = tmp_path / "node.toml"
    cfg_file.write_text("[data]\npath = ''\n")
    with pytest.raises(ConfigError, match=r"data\.path: not set") as e:
        node_learner(load_config(cfg_file, environ={}), TaskSettings())
    assert e.value.exit_code == 2
    _csv(tmp_path / "mine" / "x.csv", "p0,label\n3,1\n")
    # relative to the config file; in-process (the worker's one line: tests/integration/worker)
    cfg_file.write_text("[data]\npath = 'mine'\n[compute]\nisolation = 'none'\n")
    with pytest.raises(DataError) as e2:
        node_learner(load_config(cfg_file, environ={}), TaskSettings())
    assert str(e2.value) == f"{tmp_path / 'mine' / 'x.csv'}: no column 'p1' (the task needs it)"
