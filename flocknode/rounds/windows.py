"""How far back the round services remember things, in one place.

Every window is counted in rounds behind the current one (or in entries), and
each holds because of the reason next to it. The store's own retention
(``store.keep_rounds``, ``flocknode.store.retention``) is a config setting and
not listed here.
"""

from __future__ import annotations

# Round views the chain follower keeps behind the current round. A role of round
# r acts until r's reveal deadline and round r + 1 opens only after r is
# finalized, so a live role's round is at most one behind; the global model's
# round (whose winning voters serve it) is the last finalized round. Three
# leaves room for a round voided in between.
VIEWS_KEPT_BEHIND = 3

# Seat tables and gossip facts (announced blobs, key wraps, model holders) kept
# behind the newest round seen. The gossip validator admits only the current and
# the next round, so four rounds outlive every message that can still arrive
# and every role that can still read them (one behind, as above).
GOSSIP_ROUNDS_KEPT = 4

# Global models whose test accuracy was measured, remembered so each is
# evaluated once. The global model changes at most once per round (a rollback
# included), so sixteen covers a node's recent history many times over.
EVALUATED_MODELS_KEPT = 16

# Role history entries shown on the status page (one per elected round); the
# metrics keep more (``metrics.KEEP_HISTORY``) for plots.
STATUS_ROLES_SHOWN = 50
