"""A cluster node's data directory as ``cluster up`` writes it, read back as its config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flocknode.cluster.launcher import ClusterSpec, node_settings
from flocknode.commands.init import init_data_dir
from flocknode.config import NodeConfig, load_config

IN_PROCESS = {"FLOCKNODE_COMPUTE_ISOLATION": "none"}  # the worker: tests/integration/worker


def cluster_node_config(
    data_dir: Path,
    spec: ClusterSpec,
    index: int,
    *paths: str,
    environ: Mapping[str, str] = IN_PROCESS,
) -> NodeConfig:
    """``init_data_dir`` with the ``node_settings`` of node ``index`` of ``spec``
    (p2p port 4101, HTTP port 9101, the task settings file ``s.json`` beside
    ``data_dir``, and ``paths``: the data shard, the test split, the base model),
    then its node.toml loaded under ``environ``."""
    values = node_settings(spec, index, 4101, 9101, data_dir.parent / "s.json", *paths)
    init_data_dir(
        data_dir,
        rpc_url="http://127.0.0.1:8545",
        chain_id=31337,
        task="",
        port=4101,
        settings=values,
    )
    return load_config(data_dir / "node.toml", environ=environ)
