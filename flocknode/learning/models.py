"""Model state as plain tensors, the deterministic initial model, task resolution.

A task (``flocknode.learning.task``) builds the model; the global model is the
task's exchanged state entries, each a float32, float16, bfloat16, int64 or
int32 tensor (the dtypes the canonical encoding and the aggregation handle).
``initial_state`` seeds torch inside a forked RNG state, so the same task and
seed give the same tensors in every process (same torch build), without
touching the caller's random state; ``build_model`` builds a model the same
way and then loads a global state into it (entries that are not exchanged
keep their seeded initial values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flocknode.learning.factory import PluginError, load_callable

State = dict[str, torch.Tensor]
ModelFactory = Callable[[], nn.Module]
STATE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32)


def digits_mlp() -> nn.Module:
    """The demo model: 64 inputs (8x8 digits), one hidden layer of 64, 10 classes."""
    from flocknode.learning.builtin import digits_mlp as build

    return build()


def load_model_factory(spec: str) -> ModelFactory:
    """Resolve ``module:function`` and check it builds a module with a usable state."""
    factory = load_callable(spec, "model factory")
    with torch.random.fork_rng(devices=[]):
        model = factory()
    if not isinstance(model, nn.Module):
        raise PluginError(f"model factory {spec!r} returned {type(model).__name__}, not a Module")
    model_state(model)  # raises on entries of another dtype
    return factory


def model_state(model: nn.Module, names: Sequence[str] | None = None, copy: bool = True) -> State:
    """A detached copy of the model's state (``names`` only, if given); refuses other dtypes.

    ``copy=False``: the model's own tensors, detached (they change with the model)."""
    full = model.state_dict()
    state: State = {}
    for name in full if names is None else names:
        if name not in full:
            raise PluginError(f"the task exchanges {name!r}, which the model's state lacks")
        t = full[name]
        if t.dtype not in STATE_DTYPES:
            allowed = ", ".join(str(d).removeprefix("torch.") for d in STATE_DTYPES)
            raise PluginError(f"model state {name!r} is {t.dtype}; state entries must be {allowed}")
        state[name] = t.detach().clone() if copy else t.detach()
    if not state:
        raise PluginError("model has no state to exchange")
    return state


def seeded_model(factory: ModelFactory, seed: int) -> nn.Module:
    """``factory()`` after ``torch.manual_seed(seed)``, the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    if not isinstance(model, nn.Module):
        raise PluginError(f"the task's model is {type(model).__name__}, not a torch Module")
    return model


def build_model(
    factory: ModelFactory, state: Mapping[str, torch.Tensor], seed: int = 0, share: bool = False
) -> nn.Module:
    """A fresh model from ``factory`` (seeded with ``seed``) holding ``state``.

    ``state`` may be a subset of the model's entries (the exchanged ones); the
    rest keep their seeded initial values. When ``state`` holds every entry,
    the seeded initialisation would be overwritten anyway and is skipped
    (``_unseeded``): same model, without drawing a model's worth of random
    numbers (0.3-0.5 s at 100 MB, for each evaluation a voter makes). With
    ``share`` the model then holds ``state``'s own tensors, not copies: for a
    caller that only evaluates it (and will not change ``state`` meanwhile).
    """
    key = _shape_key(factory, state)
    seeded = None
    if key is not None and key not in _UNSEEDED_OK:
        seeded = seeded_model(factory, seed)  # the factory's first run is a real one
        _UNSEEDED_OK[key] = _fully_set(seeded, state)
    if key is not None and _UNSEEDED_OK[key]:
        model = _unseeded(factory, state, share)
        if model is not None:
            return model
        _UNSEEDED_OK[key] = False
    model = seeded if seeded is not None else seeded_model(factory, seed)
    _, unexpected = model.load_state_dict(dict(state), strict=False)
    if unexpected:
        raise PluginError(f"state entry {unexpected[0]!r} is not in the task's model")
    return model


# Per factory and state names: whether ``state`` sets every tensor of the model,
# learnt from a seeded build the first time. The meta-device build is tried
# only then: a factory whose state is partial (lm-lora's adapters) runs once a
# build, and its first run, which may fill a lazy cache (a base model), is
# never on the meta device.
_UNSEEDED_OK: dict[tuple[ModelFactory, frozenset[str]], bool] = {}


def _shape_key(
    factory: ModelFactory, state: Mapping[str, torch.Tensor]
) -> tuple[ModelFactory, frozenset[str]] | None:
    key = (factory, frozenset(state))
    try:
        hash(key)
    except TypeError:  # a factory that is not hashable: always the seeded way
        return None
    return key


def _fully_set(model: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    """Every tensor the model holds is a parameter or buffer of its state dict that
    ``state`` has a value for (no buffer left out, no plain tensor attribute)."""
    named = dict(model.named_parameters()) | dict(model.named_buffers())
    if set(named) != set(state) or set(model.state_dict()) != set(state):
        return False
    return not any(isinstance(v, torch.Tensor) for m in model.modules() for v in vars(m).values())


def _unseeded(
    factory: ModelFactory, state: Mapping[str, torch.Tensor], share: bool = False
) -> nn.Module | None:
    """The model built on the meta device, then given empty CPU memory and ``state``;
    ``None`` unless that is certainly the seeded model holding ``state``: the
    factory runs there at all, ``state`` sets every tensor (``_fully_set``),
    and the factory made each of them on the meta device."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = factory()
    except Exception:  # a factory that needs real tensors: the seeded way
        return None
    if not isinstance(model, nn.Module) or not _fully_set(model, state):
        return None
    if not all(t.is_meta for t in (*model.parameters(), *model.buffers())):
        return None
    if not share:
        model = model.to_empty(device="cpu")
    model.load_state_dict(dict(state), strict=True, assign=share)
    return model


def initial_state(factory: ModelFactory, seed: int, names: Sequence[str] | None = None) -> State:
    """The task's initial global model: ``factory()`` after ``torch.manual_seed(seed)``."""
    return model_state(seeded_model(factory, seed), names)


def model_hash(state: Mapping[str, torch.Tensor]) -> bytes:
    """SHA-256 of the model's canonical bytes (``flocknode.crypto.canonical``)."""
    from flocknode.crypto.canonical import update_hash

    return update_hash(state)


def load_task(spec: str, package_dir: Path | None = None) -> Any:
    """A built-in task by name (``digits-mlp``), or ``module:attr`` naming a task object,
    a task class or a function returning one (``PluginError`` naming the spec if not).

    ``package_dir`` is the unpacked tree of the task's package, already checked
    against the settings' ``task_package`` hash (``PackageCache.checked_dir``):
    the task's top-level module must come from it (docs/protocol.md, "Task
    packages"). Without it, ``module:attr`` is imported from ``sys.path``.
    """
    from flocknode.learning.builtin import BUILTIN_TASKS

    builtin = BUILTIN_TASKS.get(spec)
    if builtin is not None and package_dir is None:
        return builtin()
    if ":" not in spec:
        known = ", ".join(sorted(BUILTIN_TASKS))
        raise PluginError(f"task {spec!r}: not built in ({known}) and not 'module:attr'")
    if package_dir is not None:
        _use_package(spec, Path(package_dir))
    obj = _resolve(spec)
    if package_dir is not None:
        _check_origin(spec, Path(package_dir))
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "build_model")):
        try:
            obj = obj()
        except Exception as e:  # an abstract Task subclass, a constructor that raised
            raise PluginError(f"task {spec!r}: cannot be created ({type(e).__name__}: {e})") from e
    for method in ("build_model", "load_data", "train", "evaluate"):
        if not callable(getattr(obj, method, None)):
            raise PluginError(f"task {spec!r}: has no {method}() method")
    return obj


def _top_module(spec: str) -> str:
    return spec.partition(":")[0].split(".")[0]


def _use_package(spec: str, package_dir: Path) -> None:
    """Put the package's tree first on ``sys.path``; its module must be in it and
    not already imported from anywhere else."""
    import importlib
    import sys

    top = _top_module(spec)
    if not ((package_dir / top).is_dir() or (package_dir / f"{top}.py").is_file()):
        raise PluginError(f"task {spec!r}: the task package has no module {top!r}")
    loaded = sys.modules.get(top)
    if loaded is not None and not _inside(loaded, package_dir):
        raise PluginError(
            f"task {spec!r}: module {top!r} is already imported from outside the task package"
        )
    entry = str(package_dir)
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()


def _check_origin(spec: str, package_dir: Path) -> None:
    import sys

    top = _top_module(spec)
    if not _inside(sys.modules.get(top), package_dir):
        raise PluginError(f"task {spec!r}: module {top!r} was not imported from the task package")


def _inside(module: Any, package_dir: Path) -> bool:
    origin = getattr(module, "__file__", None)
    if not origin:
        return False
    try:
        return Path(origin).resolve().is_relative_to(package_dir.resolve())
    except OSError:
        return False


def _resolve(spec: str) -> Any:
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise PluginError(f"task {spec!r}: cannot import module {module_name!r} ({e})") from None
    for part in attr.split("."):
        if not part or not hasattr(obj, part):
            raise PluginError(f"task {spec!r}: {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj
