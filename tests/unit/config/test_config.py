"""NodeConfig: layering and one-line errors naming the source and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from flocknode.config import load_config
from flocknode.errors import ConfigError

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(text)
    return p


def test_defaults_then_file_then_env_then_flags(tmp_path: Path) -> None:
    p = write(tmp_path, f'[chain]\nrpc_url = "http://10.0.0.1:8545"\ntask = "{TASK.lower()}"\n')
    cfg = load_config(p, environ={})
    assert cfg.chain.rpc_url == "http://10.0.0.1:8545"
    assert cfg.chain.task == TASK  # checksummed
    assert cfg.p2p.listen == ["/ip4/0.0.0.0/tcp/4001"]  # default
    env = {"FLOCKNODE_CHAIN_RPC_URL": "http://127.0.0.1:9999", "FLOCKNODE_DATA_NODE_INDEX": "3"}
    cfg = load_config(p, environ=env)
    assert cfg.chain.rpc_url == "http://127.0.0.1:9999"
    assert cfg.data.node_index == 3
    cfg = load_config(p, environ=env, overrides={"chain": {"rpc_url": "http://127.0.0.1:1"}})
    assert cfg.chain.rpc_url == "http://127.0.0.1:1"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    p = write(tmp_path, 'data_dir = "state"\n[chain]\nkeystore = "k/w.json"\n')
    cfg = load_config(p, environ={})
    assert cfg.data_path == tmp_path / "state"
    assert cfg.path(cfg.chain.keystore) == tmp_path / "k/w.json"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[chain]\nrpc = 1\n", "chain.rpc", "unknown key"),
        ("bogus = true\n", "bogus", "unknown key"),
        ('[chain]\nprivate_key = "0xabc"\n', "chain.private_key", "never read from a file"),
        ('[chain]\nchain_id = "31337"\n', "chain.chain_id", "valid integer"),
        ("[chain]\nchain_id = -1\n", "chain.chain_id", "greater than 0"),
        ('[chain]\nrpc_url = "localhost:8545"\n', "chain.rpc_url", "not an http(s) URL"),
        ('[chain]\nrpc_url = "http://h:99999"\n', "chain.rpc_url", "port"),
        ('[chain]\ntask = "0x1234"\n', "chain.task", "not a contract address"),
        ('[p2p]\nlisten = ["/ip4/1.2.3.4/tcp/x"]\n', "p2p.listen", "not a multiaddr"),
        ("[data]\nnode_index = -1\n", "data.node_index", "greater than or equal to 0"),
        ('[data]\nsplit = "iid"\n', "data.split", "unknown key"),
        ('[log]\nformat = "xml"\n', "log.format", "text"),
    ],
)
def test_bad_file_names_file_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(p, environ={})
    msg = str(ei.value)
    assert msg.startswith(f"{p}: {key}: "), msg
    assert fragment in msg
    assert "\n" not in msg


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[chain\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p, environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_bad_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(environ={"FLOCKNODE_CHAIN_CHAIN_ID": "abc"})
    assert str(ei.value).startswith("FLOCKNODE_CHAIN_CHAIN_ID: chain.chain_id:")
    with pytest.raises(ConfigError, match="FLOCKNODE_CHAIN_NOPE: unknown setting"):
        load_config(environ={"FLOCKNODE_CHAIN_NOPE": "1"})


def test_flags_are_named_in_errors() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(
            overrides={"chain": {"rpc_url": "ftp://x"}},
            environ={},
            flag_names={"chain.rpc_url": "--rpc"},
        )
    assert str(ei.value).startswith("--rpc: chain.rpc_url:")


def test_to_toml_writes_every_setting_so_it_reads_back(tmp_path: Path) -> None:
    from flocknode.config import to_toml

    cfg = load_config(
        overrides={
            "chain": {"task": TASK, "password_file": 'pw "quoted"\\file', "confirmations": 3},
            "p2p": {"listen": ["/ip4/127.0.0.1/tcp/4100"], "bootstrap": []},
            "data": {"node_index": 2, "num_nodes": 7, "path": "data/ünï"},
            "store": {"keep_rounds": 0},
            "http": {"enabled": False},
            "log": {"modules": {"libp2p": "info", "flocknode.rounds": "debug"}},
        },
        environ={},
    )
    text = to_toml(cfg, {"data.node_index": "# which shard is yours"}, "# header\n")
    assert text.startswith("# header\n") and "# which shard is yours\nnode_index = 2\n" in text
    back = load_config(write(tmp_path, text), environ={})
    assert back.model_dump() == cfg.model_dump()
