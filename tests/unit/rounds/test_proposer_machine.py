"""The proposer's decisions, table-driven (docs/protocol.md, "Behaviour of the node")."""

from __future__ import annotations

import dataclasses

import pytest

from flocknode.chain.types import Phase
from flocknode.rounds import proposer_machine as m

KEY = b"\x01" * 32
FRESH = m.ProposerFacts(
    phase=Phase.TRAIN, now=50.0, sealed=False, submitted=False, base_held=True, recipients=(KEY,)
)
SEALED = dataclasses.replace(FRESH, sealed=True, recipients=())
SUBMITTED = dataclasses.replace(SEALED, submitted=True)

CASES: list[tuple[str, m.ProposerFacts, m.Action]] = [
    ("trains in the train phase", FRESH, m.Train((KEY,))),
    *[
        (
            f"missed the train phase ({p.label})",
            dataclasses.replace(FRESH, phase=p),
            m.GiveUp(f"missed the train phase (phase={p.label})"),
        )
        for p in (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZED, Phase.VOIDED)
    ],
    (
        "no base model",
        dataclasses.replace(FRESH, base_held=False),
        m.GiveUp("cannot train: global model not held"),
    ),
    (
        "no registered voter",
        dataclasses.replace(FRESH, recipients=()),
        m.GiveUp("no voter to seal for"),
    ),
    # journaled update: submit whatever the phase (the contract judges it), never retrain
    ("sealed: submit", SEALED, m.Submit()),
    (
        "sealed, restarted in commit: submit",
        dataclasses.replace(SEALED, phase=Phase.COMMIT),
        m.Submit(),
    ),
    (
        "sealed, base model gone: still submit",
        dataclasses.replace(SEALED, base_held=False),
        m.Submit(),
    ),
    (
        "submit refused",
        dataclasses.replace(SEALED, refused="NotElectedProposer"),
        m.GiveUp("submitUpdate refused: NotElectedProposer"),
    ),
    ("announce in train, no wraps", SUBMITTED, m.Publish(wraps=False)),
    # docs/protocol.md, "Chain reorganisations and confirmations"
    (
        "submitted, a view read after it lacks it: a reorg, submit again",
        dataclasses.replace(SUBMITTED, fresh=True),
        m.Submit(),
    ),
    *[
        (
            f"a reorg took the election away ({name})",
            dataclasses.replace(f, phase=Phase.SEEDING, refused="round 2 is in seeding"),
            m.Wait(50.0 + m.REANNOUNCE_SECONDS),
        )
        for name, f in (("fresh", FRESH), ("sealed", SEALED), ("submitted", SUBMITTED))
    ],
    (
        "submitted and shown",
        dataclasses.replace(SUBMITTED, fresh=True, chain_submitted=True),
        m.Publish(wraps=False),
    ),
    (
        "submitted, lost after the train phase: nothing to send",
        dataclasses.replace(SUBMITTED, fresh=True, phase=Phase.COMMIT),
        m.Publish(wraps=True),
    ),
    (
        "announced 1 s ago: wait",
        dataclasses.replace(SUBMITTED, published_phase=Phase.TRAIN, published_at=49.0),
        m.Wait(49.0 + m.REANNOUNCE_SECONDS),
    ),
    (
        "announced 2 s ago: again",
        dataclasses.replace(SUBMITTED, published_phase=Phase.TRAIN, published_at=48.0),
        m.Publish(wraps=False),
    ),
    (
        "commit opened: wraps at once",
        dataclasses.replace(
            SUBMITTED, phase=Phase.COMMIT, published_phase=Phase.TRAIN, published_at=49.9
        ),
        m.Publish(wraps=True),
    ),
    (
        "commit, published 1 s ago: wait",
        dataclasses.replace(
            SUBMITTED, phase=Phase.COMMIT, published_phase=Phase.COMMIT, published_at=49.0
        ),
        m.Wait(51.0),
    ),
    ("reveal: wraps", dataclasses.replace(SUBMITTED, phase=Phase.REVEAL), m.Publish(wraps=True)),
    *[
        (f"over ({p.label})", dataclasses.replace(SUBMITTED, phase=p), m.Done())
        for p in (Phase.FINALIZABLE, Phase.FINALIZED, Phase.VOIDED)
    ],
]


@pytest.mark.parametrize(("facts", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(facts: m.ProposerFacts, action: m.Action) -> None:
    assert m.decide(facts) == action


@pytest.mark.parametrize("phase", list(Phase))
def test_wraps_are_never_released_before_the_train_phase_closed(phase: Phase) -> None:
    for f in (SUBMITTED, dataclasses.replace(SUBMITTED, published_phase=phase, published_at=0)):
        a = m.decide(dataclasses.replace(f, phase=phase))
        if isinstance(a, m.Publish) and a.wraps:
            assert phase in (Phase.COMMIT, Phase.REVEAL)
