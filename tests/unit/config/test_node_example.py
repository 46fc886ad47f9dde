"""config/node.example.toml: with its placeholders filled it loads with NodeConfig,
it names every config key, and unfilled it is refused (so it cannot rot)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from flocknode.config import NodeConfig, load_config
from flocknode.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "node.example.toml"
FILLED = {
    "RPC_URL": "https://rpc.example.org",
    "CHAIN_ID": "11155111",
    "TASK_ADDRESS": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "PUBLIC_IP": "203.0.113.7",
}


def filled(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text()
    for key, value in FILLED.items():
        text = text.replace(f"<{key}>", value)
    out = tmp_path / "node.toml"
    out.write_text(text)
    return out


def keys_of(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out |= keys_of(sub, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def flat(d: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        if isinstance(v, dict) and prefix + k != "log.modules":
            out |= flat(v, f"{prefix}{k}.")
        else:
            out.add(prefix + k)
    return out


def test_the_placeholders_are_the_ones_install_service_fills() -> None:
    values = [line.split("#")[0] for line in EXAMPLE.read_text().splitlines()]
    found = set(re.findall(r"<([A-Z_]+)>", "\n".join(values)))
    assert found == set(FILLED)


def test_the_filled_example_loads_with_the_systemd_layout(tmp_path: Path) -> None:
    cfg = load_config(filled(tmp_path), environ={})
    assert cfg.data_path == Path("/var/lib/flocknode")
    assert cfg.path(cfg.chain.keystore) == Path("/var/lib/flocknode/keys/wallet.json")
    assert cfg.path(cfg.chain.password_file) == Path("/etc/flocknode/wallet-password")
    assert cfg.chain.task == FILLED["TASK_ADDRESS"]
    assert cfg.announce_addrs() == ["/ip4/203.0.113.7/tcp/4001"]
    assert cfg.http.listen.startswith("127.0.0.1:")


def test_the_example_sets_every_config_key_with_a_comment() -> None:
    text = EXAMPLE.read_text()
    for key, value in FILLED.items():
        text = text.replace(f"<{key}>", value)
    assert flat(tomllib.loads(text)) == keys_of(NodeConfig)
    assert text.count("\n# ") > 20  # commented for a person


def test_the_unfilled_example_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "node.toml"
    raw.write_text(EXAMPLE.read_text())
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(raw, environ={})
    # with only the bare chain id filled, the quoted placeholders are refused too
    raw.write_text(EXAMPLE.read_text().replace("<CHAIN_ID>", "1"))
    with pytest.raises(ConfigError, match=r"chain\.rpc_url"):
        load_config(raw, environ={})
