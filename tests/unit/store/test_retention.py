"""Retention: the pure "what to delete" decision and the config key that sizes it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flocknode.config import load_config
from flocknode.errors import ConfigError
from flocknode.store.journal import RoundRecord, VoteRecord
from flocknode.store.retention import (
    PrunePlan,
    RetentionView,
    newest_applied,
    plan_prune,
    record_refs,
)


def cid(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def vote(aggregate: bytes) -> VoteRecord:
    return VoteRecord(aggregate.hex(), 0b1, 0, 0, 10, "00" * 32)


GLOBAL = cid("global")


def view(current: int, finished: int, keep: int = 2, model: bytes = GLOBAL) -> RetentionView:
    return RetentionView(current, finished, model, keep)


def test_old_unreferenced_objects_and_records_go_the_window_stays() -> None:
    records = {
        1: RoundRecord(1, role="proposer", blob_id=cid("blob1").hex(), submitted=True),
        2: RoundRecord(2, role="voter", vote=vote(cid("agg2")), committed=True, revealed=True),
        5: RoundRecord(5, role="proposer", blob_id=cid("blob5").hex(), submitted=True),
    }
    first_seen = {cid("fetched1"): 1, cid("fetched4"): 4, cid("fetched5"): 5}
    objects = [cid("blob1"), cid("agg2"), cid("blob5"), *first_seen, GLOBAL]
    # round 5 finished, keep 2: rounds 4 and 5 stay, 1..3 are old
    plan = plan_prune(view(6, 5), records, objects, first_seen | {GLOBAL: 1})
    assert plan.records == (1, 2)
    assert set(plan.objects) == {cid("blob1"), cid("agg2"), cid("fetched1")}
    assert set(plan.first_seen) == {cid("fetched4"), cid("fetched5"), cid("blob5"), GLOBAL}


def test_the_current_global_model_is_never_deleted_however_old() -> None:
    plan = plan_prune(view(100, 99), {}, [GLOBAL, cid("old")], {GLOBAL: 1, cid("old"): 1})
    assert plan.objects == (cid("old"),)
    assert plan.first_seen == {GLOBAL: 1}


def test_records_of_unfinished_rounds_and_what_they_name_stay() -> None:
    # Round 9 is open: committed, not revealed. Its aggregate and a blob it names stay
    # even with ages that say "old" (an index from another life of the data dir).
    agg, blob = cid("agg9"), cid("blob9")
    records = {
        9: RoundRecord(9, role="voter", vote=vote(agg), committed=True),
        10: RoundRecord(10, role="proposer", blob_id=blob.hex()),
    }
    plan = plan_prune(view(10, 8), records, [agg, blob], {agg: 1, blob: 1})
    assert plan.records == () and plan.objects == ()


def test_newest_applied_models_stay_when_rounds_stop_producing_them() -> None:
    # Models applied in rounds 1..4; rounds 5..30 produced none (voided or rejected).
    models = {r: cid(f"model{r}") for r in range(1, 5)}
    records = {r: RoundRecord(r, applied_model=m.hex()) for r, m in models.items()}
    plan = plan_prune(view(31, 30, keep=2, model=models[4]), records, list(models.values()), {})
    assert set(plan.objects) == {models[1], models[2]}
    assert plan.records == (1, 2)
    assert newest_applied(records, 2) == {4: models[4], 3: models[3]}


def test_an_old_record_kept_for_its_model_is_trimmed_and_its_blob_goes() -> None:
    # Round 1 produced the current model; rounds 2..9 produced none.
    blob, m1 = cid("blob1"), cid("model1")
    records = {1: RoundRecord(1, role="proposer", blob_id=blob.hex(), applied_model=m1.hex())}
    plan = plan_prune(view(10, 9, model=m1), records, [blob, m1], {blob: 1, m1: 1})
    assert plan.trimmed == (1,) and plan.records == () and plan.objects == (blob,)
    trimmed = {1: RoundRecord(1, applied_model=m1.hex())}
    again = plan_prune(view(10, 9, model=m1), trimmed, [m1], plan.first_seen)
    assert again == PrunePlan((), (), {m1: 1}), "trimmed once"


def test_unseen_objects_start_their_window_now_and_future_ages_are_clamped() -> None:
    new, future = cid("new"), cid("future")
    plan = plan_prune(view(40, 40), {}, [new, future], {future: 900})
    assert plan.first_seen == {new: 40, future: 40}
    assert plan.objects == ()


def test_a_record_dates_the_objects_it_names() -> None:
    # The age index was lost; the journal still says round 1 made this blob.
    blob = cid("blob1")
    records = {1: RoundRecord(1, role="proposer", blob_id=blob.hex(), submitted=True)}
    plan = plan_prune(view(10, 9), records, [blob], {})
    assert plan.objects == (blob,) and plan.records == (1,)


@pytest.mark.parametrize(
    "v",
    [
        view(10, 9, keep=0),  # disabled
        view(10, 9, model=b""),  # the chain's model not read yet
        view(1, 0),  # nothing finished yet
    ],
)
def test_nothing_is_deleted_without_a_usable_view(v: RetentionView) -> None:
    records = {1: RoundRecord(1, blob_id=cid("b").hex())}
    plan = plan_prune(v, records, [cid("b"), cid("x")], {cid("x"): 1})
    assert plan == PrunePlan((), (), {cid("b"): 1, cid("x"): 1})


def test_malformed_references_are_ignored_not_fatal() -> None:
    rec = RoundRecord(3, blob_id="zz", applied_model="abcd", vote=vote(cid("a")))
    assert record_refs(rec) == {cid("a")}


# -- properties over arbitrary journals and stores -----------------------------------
names = st.sampled_from([cid(str(i)) for i in range(12)])
maybe_ref = st.one_of(st.just(""), names.map(bytes.hex))


@st.composite
def journals(draw: st.DrawFn) -> dict[int, RoundRecord]:
    out = {}
    for r in draw(st.sets(st.integers(1, 40), max_size=12)):
        agg = draw(st.one_of(st.none(), names))
        out[r] = RoundRecord(
            r,
            blob_id=draw(maybe_ref),
            applied_model=draw(maybe_ref),
            vote=vote(agg) if agg else None,
            committed=draw(st.booleans()),
        )
    return out


@settings(max_examples=300, deadline=None)
@given(
    records=journals(),
    objects=st.sets(names, max_size=12),
    ages=st.dictionaries(names, st.integers(0, 50)),
    finished=st.integers(0, 40),
    open_rounds=st.integers(0, 2),
    keep=st.integers(2, 6),
    model=names,
)
def test_plan_invariants(
    records: dict[int, RoundRecord],
    objects: set[bytes],
    ages: dict[bytes, int],
    finished: int,
    open_rounds: int,
    keep: int,
    model: bytes,
) -> None:
    current = finished + open_rounds
    v = view(current, finished, keep, model)
    plan = plan_prune(v, records, objects, ages)
    deleted, dropped = set(plan.objects), set(plan.records)
    assert dropped.isdisjoint(plan.trimmed)
    kept = {r: rec for r, rec in records.items() if r not in dropped}
    for r in plan.trimmed:
        assert r <= finished - keep and kept[r].applied_model
        kept[r] = RoundRecord(r, applied_model=kept[r].applied_model)
    assert model not in deleted
    assert deleted <= objects and dropped <= set(records)
    assert deleted.isdisjoint(plan.first_seen) and deleted | set(plan.first_seen) == objects
    for r in dropped:
        assert r <= finished - keep, "only finished rounds outside the window"
    for rec in kept.values():
        assert record_refs(rec).isdisjoint(deleted), "a kept record names a deleted object"
    for r in newest_applied(records, keep):
        assert r in kept
    for c in deleted:  # old by the index or by the oldest record naming it
        named = [r for r, rec in records.items() if c in record_refs(rec)]
        assert min([ages.get(c, current), current, *named]) <= finished - keep


# -- the config key ------------------------------------------------------------------
def test_keep_rounds_default_and_file_and_env(tmp_path: Path) -> None:
    assert load_config(environ={}).store.keep_rounds == 16
    p = tmp_path / "node.toml"
    p.write_text("[store]\nkeep_rounds = 0\n")
    assert load_config(p, environ={}).store.keep_rounds == 0
    env = {"FLOCKNODE_STORE_KEEP_ROUNDS": "40"}
    assert load_config(p, environ=env).store.keep_rounds == 40


@pytest.mark.parametrize("value", ["1", "-3", '"many"'])
def test_keep_rounds_out_of_range_is_one_line_naming_the_key(tmp_path: Path, value: str) -> None:
    p = tmp_path / "node.toml"
    p.write_text(f"[store]\nkeep_rounds = {value}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    text = str(e.value)
    assert "store.keep_rounds" in text and str(p) in text and "\n" not in text
