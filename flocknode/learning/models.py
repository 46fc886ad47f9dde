"""Built-in models, model state as plain tensors, the deterministic initial model.

A model factory is any callable taking no arguments and returning a
``torch.nn.Module`` whose ``state_dict`` holds only float32 tensors (the
update format is float32). ``initial_state`` seeds torch inside a forked RNG
state, so the same factory and seed give the same tensors in every process
(same torch build), without touching the caller's random state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from flocknode.learning.factory import PluginError, load_callable

State = dict[str, torch.Tensor]
ModelFactory = Callable[[], nn.Module]


def digits_mlp() -> nn.Module:
    """The demo model: 64 inputs (8x8 digits), one hidden layer of 64, 10 classes."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def load_model_factory(spec: str) -> ModelFactory:
    """Resolve ``module:function`` and check it builds a module with a float32 state."""
    factory = load_callable(spec, "model factory")
    with torch.random.fork_rng(devices=[]):
        model = factory()
    if not isinstance(model, nn.Module):
        raise PluginError(f"model factory {spec!r} returned {type(model).__name__}, not a Module")
    model_state(model)  # raises on non-float32 entries
    return factory


def model_state(model: nn.Module) -> State:
    """A detached copy of the model's state, refusing anything that is not float32."""
    state: State = {}
    for name, t in model.state_dict().items():
        if t.dtype != torch.float32:
            raise PluginError(f"model state {name!r} is {t.dtype}; updates must be float32")
        state[name] = t.detach().clone()
    if not state:
        raise PluginError("model has no parameters")
    return state


def build_model(factory: ModelFactory, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A fresh model from ``factory`` holding ``state`` (the caller's RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        model = factory()
    model.load_state_dict(dict(state), strict=True)
    return model


def initial_state(factory: ModelFactory, seed: int) -> State:
    """The task's initial global model: ``factory()`` after ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    return model_state(model)


def model_hash(state: Mapping[str, torch.Tensor]) -> bytes:
    """SHA-256 of the model's canonical bytes (``flocknode.crypto.canonical``)."""
    from flocknode.crypto.canonical import update_hash

    return update_hash(state)
