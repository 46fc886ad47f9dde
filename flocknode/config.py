"""NodeConfig: defaults -> TOML file -> environment (FLOCKNODE_...) -> flags.

Validated at the edge: an unknown key, a wrong type, a malformed RPC URL or task
address is one ``ConfigError`` naming the file (or variable, or flag) and the key.
Paths in the file are relative to the file's directory.

The wallet is loaded here too (``load_wallet``): an encrypted keystore with a
password from a file or ``FLOCKNODE_WALLET_PASSWORD``; a raw hex key only from
``FLOCKNODE_PRIVATE_KEY`` and only when the config says the chain is a local one.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from eth_utils import is_hex_address, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flocknode.errors import ConfigError

LOCAL_CHAIN_ID = 31337
ENV_PREFIX = "FLOCKNODE_"
ENV_PASSWORD = "FLOCKNODE_WALLET_PASSWORD"
ENV_PRIVATE_KEY = "FLOCKNODE_PRIVATE_KEY"
# Variables that are not config keys (read directly where they are needed).
_NON_KEY_ENV = {ENV_PASSWORD, ENV_PRIVATE_KEY, "FLOCKNODE_CONFIG", "FLOCKNODE_BYZANTINE"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChainConfig(_Section):
    rpc_url: str = "http://127.0.0.1:8545"
    chain_id: int = Field(default=LOCAL_CHAIN_ID, gt=0)
    task: str = ""
    keystore: str = "keys/wallet.json"
    password_file: str = ""
    confirmations: int = Field(default=0, ge=0, le=64)

    @field_validator("rpc_url")
    @classmethod
    def _check_rpc(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {v!r}")
        try:
            u.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ValueError(f"malformed port in {v!r}") from None
        return v

    @field_validator("task")
    @classmethod
    def _check_task(cls, v: str) -> str:
        if v == "":
            return v
        if not is_hex_address(v):
            raise ValueError(f"not a contract address (0x + 40 hex digits): {v!r}")
        return to_checksum_address(v)


class P2PConfig(_Section):
    listen: list[str] = Field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4001"])
    announce: list[str] = Field(default_factory=list)
    bootstrap: list[str] = Field(default_factory=list)

    @field_validator("listen", "announce", "bootstrap")
    @classmethod
    def _check_multiaddrs(cls, v: list[str]) -> list[str]:
        from multiaddr import Multiaddr

        for a in v:
            try:
                Multiaddr(a)
            except Exception:
                raise ValueError(f"not a multiaddr: {a!r}") from None
        return v


class DataConfig(_Section):
    """Where this participant's private data is (``path``, read by the task's code).

    ``test_path`` is for testers: a held-out set the node reports accuracy on,
    never used in a vote. ``node_index``/``num_nodes`` name a test node's shard.
    """

    path: str = ""
    test_path: str = ""  # testers: a held-out set the node reports accuracy on, never votes with
    node_index: int = Field(default=0, ge=0)
    num_nodes: int = Field(default=1, ge=1)


class TaskConfig(_Section):
    """The task's training and aggregation settings, as published by its creator.

    Empty: the node reads the settings its creator published on chain. A file:
    the node checks it against the chain and names any setting that differs.
    ``base_model``: this participant's copy of the task's base model (a local
    Hugging Face directory, for ``lm-lora``), checked against the settings'
    ``training.base_model_hash`` at start.
    ``package``: the task's package if this node has it (it must hash to the
    settings' ``task_package``); empty: fetched from members by its hash.
    """

    settings: str = ""
    base_model: str = ""
    package: str = ""  # the task's package (dir, .py, .whl or archive); else fetched by hash


class ComputeConfig(_Section):
    """Where and how task code (training, evaluation) runs on this node (node-local).

    ``isolation``: ``namespace`` runs it in a worker process without network,
    with a read-only view of the data and the task's package (docs/protocol.md,
    "Task worker"); a node where namespaces are unavailable refuses to start.
    ``process``: a worker process with the memory limit and deadline but no
    namespaces; ``none``: inside the daemon (development only).
    ``memory_mb``: the worker's address-space limit. ``timeout_seconds``: the
    longest one training or evaluation call may take before the worker is
    killed. ``threads``: torch threads in the worker (0: torch's default).
    ``device``: ``auto`` (a GPU if torch sees one, else the CPU), ``cpu``,
    ``cuda`` or ``cuda:N``, for training and evaluation only.
    ``read_only``: more paths task code may read (a task package directory).
    """

    isolation: Literal["namespace", "process", "none"] = "namespace"
    memory_mb: int = Field(default=4096, ge=256)
    timeout_seconds: float = Field(default=600.0, gt=0)
    threads: int = Field(default=0, ge=0)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    read_only: list[str] = Field(default_factory=list)


MIN_KEEP_ROUNDS = 2


class StoreConfig(_Section):
    """How much history the content store and the round journal keep.

    Node-local (not a task setting, not in configHash): nodes of one task may
    keep different amounts. The current global model and anything a round that
    is not finished still needs are kept whatever this says.
    """

    keep_rounds: int = 16  # 0 keeps everything

    @field_validator("keep_rounds")
    @classmethod
    def _check_keep_rounds(cls, v: int) -> int:
        if v != 0 and v < MIN_KEEP_ROUNDS:
            raise ValueError(
                f"must be at least {MIN_KEEP_ROUNDS} (or 0 to keep every round), got {v}"
            )
        return v


class HttpConfig(_Section):
    listen: str = "127.0.0.1:9100"
    enabled: bool = True


LogLevel = Literal["debug", "info", "warning", "error"]


class LogConfig(_Section):
    level: LogLevel = "info"
    format: Literal["text", "json"] = "text"
    # per-logger levels, e.g. { libp2p = "info", "flocknode.p2p" = "debug" }
    modules: dict[str, LogLevel] = Field(default_factory=dict)


class NodeConfig(_Section):
    data_dir: str = "."
    chain: ChainConfig = Field(default_factory=ChainConfig)
    p2p: P2PConfig = Field(default_factory=P2PConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    # Where the config came from; relative paths are resolved against base_dir.
    source: str = Field(default="<defaults>", exclude=True)
    base_dir: str = Field(default=".", exclude=True)

    def path(self, p: str) -> Path:
        """A path from the config, resolved against the config file's directory."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(self.base_dir) / q

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    @property
    def is_local_chain(self) -> bool:
        return self.chain.chain_id == LOCAL_CHAIN_ID

    def announce_addrs(self, bound: list[str] | None = None) -> list[str]:
        """The multiaddrs to register: ``p2p.announce``, or the listen addresses if concrete.

        A wildcard listen address (0.0.0.0) cannot be dialled; on a local chain it
        becomes 127.0.0.1, elsewhere the operator must say where the node is reachable.
        ``bound``: the addresses the host actually bound (port 0 resolved).
        """
        if self.p2p.announce:
            return list(self.p2p.announce)
        out = []
        for a in bound if bound is not None else self.p2p.listen:
            if "/ip4/0.0.0.0/" in a or "/ip6/::/" in a:
                if not self.is_local_chain:
                    raise ConfigError(
                        self.source,
                        "p2p.announce",
                        "listen address is a wildcard; set the public address others dial",
                    )
                a = a.replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/").replace("/ip6/::/", "/ip6/::1/")
            out.append(a)
        return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


_SECTIONS: dict[str, type[_Section]] = {
    "chain": ChainConfig,
    "p2p": P2PConfig,
    "data": DataConfig,
    "task": TaskConfig,
    "compute": ComputeConfig,
    "store": StoreConfig,
    "http": HttpConfig,
    "log": LogConfig,
}


def _env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """FLOCKNODE_CHAIN_RPC_URL=... -> {"chain": {"rpc_url": ...}}.

    String settings take the value as it is; others parse it as a TOML value
    (``31337``, ``true``, ``["/ip4/..."]``).
    """
    layer: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NON_KEY_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest == "data_dir":
            layer["data_dir"] = raw
            names["data_dir"] = name
            continue
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        key = rest[len(section) + 1 :] if section else ""
        if section is None or key not in _SECTIONS[section].model_fields:
            raise ConfigError(name, "", "unknown setting in environment (no such config key)")
        is_str = _SECTIONS[section].model_fields[key].annotation is str
        layer.setdefault(section, {})[key] = raw if is_str else _parse_env_value(raw)
        names[f"{section}.{key}"] = name
    return layer, names


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # let validation name the key and the expected type


def _validate(data: dict[str, Any], source: str, env_names: Mapping[str, str]) -> NodeConfig:
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        where = env_names.get(key, source)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            if key.split(".")[-1] in ("private_key", "privkey", "key"):
                msg += (
                    f" (a raw private key is never read from a file: use a keystore, or "
                    f"{ENV_PRIVATE_KEY} on a local chain)"
                )
        raise ConfigError(where, key, msg) from None


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Load defaults -> TOML -> environment -> flags (``overrides``, nested dicts).

    ``flag_names`` maps a dotted key (``chain.rpc_url``) to the flag that set it
    (``--rpc``), so an error names the flag rather than the file.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "<defaults>"
    base_dir = Path.cwd()
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(source, "", "config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(source, "", f"cannot read config file: {e}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(source, "", f"not valid TOML: {e}") from None
        base_dir = p.resolve().parent
    env_layer, env_names = _env_layer(environ)
    data = _merge(data, env_layer)
    if overrides:
        data = _merge(data, overrides)
    data["source"] = source
    data["base_dir"] = str(base_dir)
    return _validate(data, source, {**env_names, **(flag_names or {})})


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def toml_value(v: Any) -> str:
    """A config value as TOML (strings as JSON strings, which TOML reads the same)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def to_toml(cfg: NodeConfig, comments: Mapping[str, str] | None = None, header: str = "") -> str:
    """Every setting of ``cfg`` as a TOML document that ``load_config`` reads back as ``cfg``.

    ``comments`` maps ``"section"`` or ``"section.key"`` (``"data_dir"`` at the top)
    to comment lines written above it; settings without one are written bare.
    """
    comments = comments or {}
    data = cfg.model_dump()
    lines = [header.rstrip("\n")] if header else []

    def setting(dotted: str, key: str, value: Any) -> None:
        if value is None:  # TOML has no null: an unset optional stays out (reads as None)
            return
        if dotted in comments:
            lines.append(comments[dotted].rstrip("\n"))
        lines.append(f"{key} = {toml_value(value)}")

    for key, value in data.items():
        if key not in _SECTIONS:
            setting(key, key, value)
    for section in _SECTIONS:
        lines.append("")
        lines.append(f"[{section}]")
        if section in comments:
            lines.append(comments[section].rstrip("\n"))
        for key, value in data[section].items():
            setting(f"{section}.{key}", key, value)
    return "\n".join(lines) + "\n"
