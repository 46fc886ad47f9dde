"""DataDir: every path a node keeps inside its data dir, in one place.

node.toml       the node's config (``flocknode init`` writes it)
keys/           peer.key, box.key, wallet.json (mode 700)
store/          the content store: update blobs, aggregates, models by hash
journal/        the round journal, one record per round
residual/       a proposer's error feedback for compressed updates, per task (mode 600 files)
spill/          a voter's opened updates of the round it votes on (mode 600, removed after)
optim/          a proposer's optimizer state of large weights (an unnamed file, kept open)
packages/       task packages by hash: <hex>.pkg archives and their unpacked <hex>/ trees
status.json     the running node's NodeStatus, rewritten every second
node.log        the node's log when a launcher (the cluster) redirects it
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATUS_FILE = "status.json"
LOG_FILE = "node.log"
CONFIG_FILE = "node.toml"


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def peer_key(self) -> Path:
        return self.keys / "peer.key"

    @property
    def box_key(self) -> Path:
        return self.keys / "box.key"

    @property
    def keystore(self) -> Path:
        return self.keys / "wallet.json"

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def residual(self) -> Path:
        return self.root / "residual"

    @property
    def spill(self) -> Path:
        return self.root / "spill"

    @property
    def optim(self) -> Path:
        return self.root / "optim"

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def status_file(self) -> Path:
        return self.root / STATUS_FILE

    @property
    def log_file(self) -> Path:
        return self.root / LOG_FILE

    def create(self) -> None:
        for d in (self.root, self.keys, self.store, self.journal):
            d.mkdir(parents=True, exist_ok=True)
        self.keys.chmod(0o700)
