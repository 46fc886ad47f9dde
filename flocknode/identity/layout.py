"""Where a node keeps its state inside its data dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def peer_key(self) -> Path:
        return self.root / "keys" / "peer.key"

    @property
    def box_key(self) -> Path:
        return self.root / "keys" / "box.key"

    @property
    def keystore(self) -> Path:
        return self.root / "keys" / "wallet.json"

    @property
    def config(self) -> Path:
        return self.root / "node.toml"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    def create(self) -> None:
        for d in (self.root, self.peer_key.parent, self.store, self.journal):
            d.mkdir(parents=True, exist_ok=True)
        self.peer_key.parent.chmod(0o700)
