"""Local state: a content-addressed store of blobs and models, and the round journal."""

from flocknode.store.content import ContentStore, StoreError
from flocknode.store.journal import Journal, RoundRecord

__all__ = ["ContentStore", "Journal", "RoundRecord", "StoreError"]
