"""lm-lora: the base model's directory hash, the task on a tiny random GPT-2, the node's checks.

Real transformers and peft on a two-layer model that ``write_tiny_model`` saves
to disk and the task loads back through ``from_pretrained(local_files_only=True)``,
the path a participant's downloaded model takes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flocknode.cluster.launcher import ClusterSpec
from flocknode.cluster.monitor import RoundSummary
from flocknode.crypto import canonical_size
from flocknode.learning.base_model import attach_base_model, dir_hash
from flocknode.learning.data import write_shards
from flocknode.learning.factory import PluginError
from flocknode.learning.learner import Learner, state_delta, task_initial_state
from flocknode.learning.lm_lora import LLM_EXTRA, LMLoRA, MissingExtraError, require_llm
from flocknode.learning.loaders import load_jsonl, write_jsonl
from flocknode.learning.models import build_model, load_task, model_state, seeded_model
from flocknode.learning.settings import TaskSettings, TrainingSettings
from flocknode.learning.task import DataError
from flocknode.node import node_learner
from tests.unit.learning.cluster_node import cluster_node_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("tiny-gpt2")
    LMLoRA().write_base_model(d)
    yield d


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lm-data")
    write_shards(LMLoRA(), d, 4)
    return d


def settings(tiny: Path, **kw: object) -> TrainingSettings:
    base = {"task": "lm-lora", "base_model_hash": dir_hash(tiny), **LMLoRA.tester_training}
    return TrainingSettings(**{**base, **kw})  # type: ignore[arg-type]


# -- the directory hash ------------------------------------------------------------------


def test_dir_hash_covers_paths_and_bytes_and_skips_dot_entries(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub" / "w.bin").write_bytes(b"\x00\x01")
    h = dir_hash(tmp_path)
    assert len(h) == 64 and h == dir_hash(tmp_path)
    (tmp_path / ".cache").mkdir()  # a download tool's bookkeeping does not count
    (tmp_path / ".cache" / "meta").write_text("etag 1")
    (tmp_path / ".lock").write_text("")
    assert dir_hash(tmp_path) == h
    (tmp_path / "sub" / "w.bin").write_bytes(b"\x00\x02")
    changed = dir_hash(tmp_path)
    assert changed != h
    (tmp_path / "sub" / "w.bin").rename(tmp_path / "sub" / "v.bin")
    assert dir_hash(tmp_path) not in (h, changed)
    # the same bytes reached through a symbolic link (a Hugging Face cache snapshot)
    link = tmp_path.parent / "link-copy"
    link.mkdir()
    (link / "config.json").symlink_to(tmp_path / "config.json")
    (link / "sub").symlink_to(tmp_path / "sub", target_is_directory=True)
    assert dir_hash(link) == dir_hash(tmp_path)


def test_dir_hash_refuses_a_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        dir_hash(tmp_path / "nope")
    with pytest.raises(DataError, match="has no files"):
        dir_hash(tmp_path)


def test_the_tiny_model_is_written_byte_for_byte_the_same(tiny: Path, tmp_path: Path) -> None:
    LMLoRA().write_base_model(tmp_path)
    assert dir_hash(tmp_path) == dir_hash(tiny)
    names = {p.name for p in tiny.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


# -- the task ----------------------------------------------------------------------------


def test_only_the_adapters_are_exchanged_and_they_are_small(tiny: Path) -> None:
    task = load_task("lm-lora")
    attach_base_model(task, dir_hash(tiny), tiny)
    model = seeded_model(task.build_model, 0)
    names = task.exchanged(model)
    full = model_state(model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {n for n in full if "lora_" in n} == set(names)
    init = task_initial_state(settings(tiny), base_model=tiny)
    assert list(init) == names
    assert all(not t.any() for n, t in init.items() if ".lora_B." in n)  # LoRA starts at the base
    ratio = canonical_size(init) / canonical_size(full)
    assert ratio < 0.02, ratio
    # the same seed gives the same adapters in another build
    again = task_initial_state(settings(tiny), base_model=tiny)
    assert all(torch.equal(init[n], again[n]) for n in names)


def test_training_lowers_the_loss_and_moves_only_the_adapters(tiny: Path, shards: Path) -> None:
    s = settings(tiny)
    learner = Learner.from_settings(s, shards / "node-2", shards / "test", base_model=tiny)
    init = learner.initial_state()
    before = learner.evaluate(init, "train")
    result = learner.train(init, seed=7)
    assert set(result.update) == set(init)
    trained = {k: init[k] + result.update[k] for k in init}
    after = learner.evaluate(trained, "train")
    assert after.metrics["loss"] < before.metrics["loss"] - 0.3, (before, after)
    assert after.score == -after.metrics["loss"] and after.score > before.score
    test_before = learner.evaluate(init, "test").metrics["loss"]
    assert learner.evaluate(trained, "test").metrics["loss"] < test_before
    # deterministic given the seed: the same update bit for bit
    again = learner.train(init, seed=7)
    assert all(torch.equal(result.update[k], again.update[k]) for k in init)
    # the frozen base is untouched: a model holding the trained adapters keeps its weights
    task = learner.task
    base = model_state(build_model(task.build_model, init, s.init_seed))
    moved = model_state(build_model(task.build_model, trained, s.init_seed))
    frozen = [n for n in base if n not in init]
    assert frozen and all(torch.equal(base[n], moved[n]) for n in frozen)
    assert state_delta(moved, base).keys() == base.keys()


def test_models_share_the_frozen_base_and_training_one_leaves_it_and_the_others(
    tiny: Path, shards: Path
) -> None:
    task = load_task("lm-lora")
    attach_base_model(task, dir_hash(tiny), tiny)
    a, b = seeded_model(task.build_model, 0), seeded_model(task.build_model, 0)
    base, _ = task._loaded()
    frozen = {n: t for n, t in model_state(a).items() if n not in task.exchanged(a)}
    # every frozen weight is the base's own storage in both models: one copy per node
    storages = {t.untyped_storage().data_ptr() for t in (*base.parameters(), *base.buffers())}
    for m in (a, b):
        held = {p.untyped_storage().data_ptr() for n, p in m.named_parameters() if "lora_" not in n}
        assert held <= storages, "a model holds a copy of the base"
    adapters_a = {id(p) for n, p in a.named_parameters() if "lora_" in n}
    assert adapters_a.isdisjoint(id(p) for n, p in b.named_parameters() if "lora_" in n)
    snapshot = {n: t.clone() for n, t in frozen.items()}
    b_before = {k: v.clone() for k, v in model_state(b, task.exchanged(b)).items()}
    data = task.load_data(shards / "node-1")
    s = settings(tiny)
    task.train(a, data, s, seed=3, device=CPU)
    # the base, and so every other model's frozen weights, is as it was
    after = model_state(b)
    assert all(torch.equal(after[n], snapshot[n]) for n in frozen)
    assert all(torch.equal(b_before[k], after[k]) for k in b_before)  # b's adapters too
    assert any(not torch.equal(model_state(a)[k], b_before[k]) for k in b_before)


def test_jsonl_formats_are_read_by_their_first_record(tiny: Path, tmp_path: Path) -> None:
    task = LMLoRA()
    task.use_base_model(tiny)
    write_jsonl(tmp_path / "a.jsonl", [{"text": "The sky is blue."}] * 3)
    write_jsonl(
        tmp_path / "b" / "chat.jsonl",
        [{"messages": [{"role": "user", "content": "Colour of sky?"}]}] * 2,
    )
    assert len(task.load_data(tmp_path / "a.jsonl")) == 3
    data = task.load_data(tmp_path / "b")
    assert len(data) == 2 and data.x.dtype == torch.int64 and data.x.shape == data.y.shape
    assert len(load_jsonl(tmp_path / "a.jsonl", "auto")) == 3
    (tmp_path / "mixed.jsonl").write_text(
        json.dumps({"text": "a"}) + "\n" + json.dumps({"instruction": "b"}) + "\n"
    )
    with pytest.raises(DataError, match=r"mixed.jsonl:2: no \"text\" string"):
        task.load_data(tmp_path / "mixed.jsonl")


# -- the node's checks -------------------------------------------------------------------


def test_the_node_refuses_another_model_or_none(tiny: Path, shards: Path, tmp_path: Path) -> None:
    s = settings(tiny)
    node = shards / "node-0"
    with pytest.raises(DataError, match=r"\[task\] base_model is not set") as e:
        Learner.from_settings(s, node)
    assert e.value.exit_code == 2
    other = tmp_path / "other"
    other.mkdir()
    for p in tiny.iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "n_layer": 1}))
    with pytest.raises(DataError, match=r"differs from the task.s training\.base_model_hash"):
        Learner.from_settings(s, node, base_model=other)
    with pytest.raises(PluginError, match=r"must give training\.base_model_hash"):
        Learner.from_settings(settings(tiny, base_model_hash=""), node, base_model=tiny)
    digits = TrainingSettings(task="digits-mlp", base_model_hash=dir_hash(tiny))
    with pytest.raises(PluginError, match="takes no base model"):
        task_initial_state(digits, base_model=tiny)


def test_a_missing_llm_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(MissingExtraError) as e:
        require_llm()
    assert LLM_EXTRA in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 2


def test_the_daemon_starts_without_the_llm_packages() -> None:
    code = (
        "import sys, flocknode.learning; "
        "from flocknode.learning.models import load_task; load_task('lm-lora'); "
        "print(sorted(m for m in ('transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_cluster_node_finds_its_base_model_in_node_toml(
    tiny: Path, shards: Path, tmp_path: Path
) -> None:
    cfg = cluster_node_config(
        tmp_path / "node-1",
        ClusterSpec(nodes=4, task="lm-lora"),
        1,
        str(shards / "node-1"),
        str(shards / "test"),
        str(tiny),
    )
    assert cfg.path(cfg.task.base_model) == tiny
    learner = node_learner(cfg, TaskSettings(training=settings(tiny)))
    assert learner.task.name == "lm-lora" and len(learner.data.val) >= 3


def test_round_json_reports_the_held_out_loss() -> None:
    r = RoundSummary(
        2, True, "0xab", "0xab", None, {}, [], [], [], 1.0, metric_name="test_loss", metric=3.93
    )
    assert r.to_json()["metric"] == {"name": "test_loss", "value": 3.93}
    assert r.to_json()["accuracy"] is None


def test_task_create_fills_in_the_base_model_hash(tiny: Path) -> None:
    from flocknode.cli import build_parser
    from flocknode.commands.chain_cli import _task_settings

    args = build_parser().parse_args(
        ["task", "create", "--base-model", str(tiny), "--task", "lm-lora"]
    )
    s = _task_settings(args, Path(args.base_model))
    assert s.training.task == "lm-lora" and s.training.base_model_hash == dir_hash(tiny)
    # the voters' flag threshold is lm-lora's own (a loss-based score), not digits-mlp's
    assert s.flag_threshold_ppm == LMLoRA.settings_defaults["flag_threshold_ppm"]
    given = "ab" * 32  # a hash in the settings is kept (the node checks it against the model)
    args = build_parser().parse_args(["task", "create", "--base-model-hash", given])
    assert _task_settings(args, tiny).training.base_model_hash == given


def test_a_bfloat16_llama_base_trains_float32_adapters_on_q_and_v(
    tiny: Path, shards: Path, tmp_path: Path
) -> None:
    transformers, _ = require_llm()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny / name).read_bytes())
    config = transformers.LlamaConfig(
        vocab_size=transformers.AutoTokenizer.from_pretrained(tmp_path).vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path)
    s = settings(tmp_path, base_model_hash=dir_hash(tmp_path))
    learner = Learner.from_settings(s, shards / "node-1", base_model=tmp_path)
    init = learner.initial_state()
    assert {n.split(".")[-4] for n in init} == {"q_proj", "v_proj"}
    assert {t.dtype for t in init.values()} == {torch.float32}
    full = model_state(build_model(learner.task.build_model, init, s.init_seed))
    assert torch.bfloat16 in {t.dtype for t in full.values()}
    update = learner.train(init, seed=1).update
    trained = {k: init[k] + update[k] for k in init}
    assert learner.evaluate(trained, "train").score > learner.evaluate(init, "train").score
