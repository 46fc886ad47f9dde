"""The proposer path (docs/protocol.md, step 3): train, seal, submit, announce, release keys.

Crash-safe through the journal: the sealed blob is in the content store and its
ids and key wraps are journaled before ``submitUpdate`` is sent, so a restarted
proposer re-announces the same update instead of training a different one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import trio
from nacl.public import PublicKey

from flocknode.chain.errors import ContractRevert
from flocknode.chain.types import Phase, RoundView
from flocknode.crypto import KeyWrap as EnvelopeWrap
from flocknode.crypto import seal_update
from flocknode.p2p.messages import KeyWraps, UpdateAnnounce, WireKeyWrap
from flocknode.rounds.context import RoleDeps

log = logging.getLogger(__name__)

REANNOUNCE_SECONDS = 2.0


def train_seed(round_seed: bytes, seat: int) -> int:
    return int.from_bytes(hashlib.sha256(round_seed + seat.to_bytes(4, "big")).digest()[:8], "big")


async def run_proposer(ctx: RoleDeps, view: RoundView, seat: int) -> None:
    r = view.round
    rec = ctx.journal.get(r)
    if not (rec.blob_id and ctx.store.has(bytes.fromhex(rec.blob_id))):
        if view.phase is not Phase.TRAIN:
            log.warning("missed the train phase round=%d phase=%s", r, view.phase.label)
            return
        if not await _train_and_seal(ctx, view, seat):
            return
        rec = ctx.journal.get(r)
    blob_id, update_hash = bytes.fromhex(rec.blob_id), bytes.fromhex(rec.update_hash)
    if not rec.submitted:
        try:
            await ctx.client.submit_update(r, update_hash, blob_id, rec.blob_size)
        except ContractRevert as e:
            if e.name != "AlreadySubmitted":
                log.warning("submitUpdate refused round=%d reason=%s", r, e)
                return
        await ctx.journal.update_async(r, submitted=True)
        log.info("update submitted round=%d seat=%d blob=%s", r, seat, rec.blob_id[:12])
    announce = UpdateAnnounce(r, blob_id, rec.blob_size, update_hash)
    rows = ctx.behaviour.wraps(list(rec.notes.get("wraps", [])))
    wraps = KeyWraps(r, blob_id, tuple(_wire_wraps(rows)))
    # Announce until the train phase closes, then release the key wraps (never before).
    while True:
        v = ctx.chain.rounds.get(r, view)
        if v.phase is Phase.TRAIN:
            await _publish(ctx, announce)
        elif v.phase in (Phase.COMMIT, Phase.REVEAL):
            await _publish(ctx, wraps)  # the voters wait on these: first
            await _publish(ctx, announce)
            if not ctx.journal.get(r).wraps_sent:
                await ctx.journal.update_async(r, wraps_sent=True)
                log.info("key wraps released round=%d voters=%d", r, len(wraps.wraps))
        else:
            return
        await ctx.chain.wait_for(r, _phase_changed(v.phase), REANNOUNCE_SECONDS)


def _phase_changed(phase: Phase) -> Callable[[RoundView], bool]:
    return lambda view: view.phase is not phase


async def _train_and_seal(ctx: RoleDeps, view: RoundView, seat: int) -> bool:
    r = view.round
    base_hash = ctx.chain.global_model_hash
    if not ctx.models.has(base_hash):
        log.warning("cannot train: global model not held yet round=%d", r)
        return False
    recipients: list[bytes] = []
    for w in view.voters:
        m = ctx.membership.member_by_wallet(w)
        if m is None:
            log.warning("voter without a valid registration round=%d voter=%s", r, w)
            continue
        recipients.append(m.box_public_key)
    recipients = list(dict.fromkeys(recipients))
    if not recipients:
        log.warning("no voter to seal for round=%d", r)
        return False
    state = await ctx.models.load_async(base_hash)
    seed = train_seed(view.seed, seat)
    res = await ctx.learner.train_async(state, seed=seed, label_flip=ctx.behaviour.flips_labels)
    ctx.metrics.train_seconds.observe(res.seconds)
    update = ctx.behaviour.update(res.update, seed)

    def seal() -> tuple[bytes, bytes, int, list[EnvelopeWrap]]:
        with ctx.store.writer() as w:
            sealed = seal_update(
                update,
                w,
                sender=ctx.box_key.private,
                recipients=[PublicKey(b) for b in recipients],
            )
            blob_id = w.commit()
        if blob_id != sealed.blob_id:  # the store hashed what the envelope wrote
            raise RuntimeError("sealed blob id mismatch")
        return sealed.update_hash, sealed.blob_id, sealed.size, list(sealed.wraps)

    update_hash, blob_id, size, env_wraps = await trio.to_thread.run_sync(seal)
    await ctx.journal.update_async(
        r,
        role="proposer",
        seat=seat,
        update_hash=update_hash.hex(),
        blob_id=blob_id.hex(),
        blob_size=size,
        notes={
            "wraps": [[wr.recipient.hex(), wr.sealed.hex()] for wr in env_wraps],
            "train_seconds": res.seconds,
            "behaviour": ctx.behaviour.name,
        },
    )
    log.info(
        "update trained and sealed round=%d seat=%d seconds=%.2f bytes=%d",
        r,
        seat,
        res.seconds,
        size,
    )
    return True


def _wire_wraps(rows: list[list[str]]) -> list[WireKeyWrap]:
    return [WireKeyWrap(bytes.fromhex(rcpt), bytes.fromhex(wrapped)) for rcpt, wrapped in rows]


async def _publish(ctx: RoleDeps, msg: UpdateAnnounce | KeyWraps) -> None:
    try:
        await ctx.gossip.publish(msg)
        ctx.metrics.inc("gossip_published")
    except Exception as e:  # a full mesh, a stale round: the next tick retries
        ctx.metrics.inc("gossip_publish_failed")
        log.debug("publish failed msg=%s error=%r", type(msg).__name__, e)
