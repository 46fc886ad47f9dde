"""Load a plug-in (model factory, data loader) named ``module:function``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from flocknode.errors import FlockError


class PluginError(FlockError):
    """A ``module:function`` that does not resolve to a callable."""

    exit_code = 2


def load_callable(spec: str, what: str = "model factory") -> Callable[..., Any]:
    """``"package.module:function"`` -> the function; ``PluginError`` naming the spec if not."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"{what} {spec!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PluginError(f"{what} {spec!r}: cannot import module {module_name!r} ({e})") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{what} {spec!r}: {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise PluginError(f"{what} {spec!r}: {attr!r} is not callable")
    return obj
