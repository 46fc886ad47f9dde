"""Serving and fetching content over ``/flock/blob/1`` and ``/flock/model/1``.

One import for the round engine: the server (``flocknode.p2p.serve``), the
fetcher (``flocknode.p2p.fetch``) and their limits (``flocknode.p2p.stream_io``).
Wire layout: ``flocknode.p2p.framing``. Rules (PROTOCOL.md steps 4 and 9):
blobs are served only to the elected voters of the round named in the request,
models to any member; a fetch tries the announced holders in turn.
"""

from flocknode.p2p.fetch import Attempt, FetchFailed, FetchResult, fetch
from flocknode.p2p.serve import ContentServer
from flocknode.p2p.stream_io import StreamLimits

__all__ = [
    "Attempt",
    "ContentServer",
    "FetchFailed",
    "FetchResult",
    "StreamLimits",
    "fetch",
]
