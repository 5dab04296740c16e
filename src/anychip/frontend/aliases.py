"""numpy's spellings of PyTorch's arguments: `axis=` for `dim=` (or `dims=`), `keepdims=` for
`keepdim=`, accepted by every Tensor method and free function that takes the PyTorch name.

The aliases are added by wrapping, found from each function's signature, so ops added
later get them too without a line of their own.

>>> import anychip as ac
>>> ac.ones(2, 3).sum(axis=0, keepdims=True).tolist()
[[2.0, 2.0, 2.0]]
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, MutableMapping
from typing import Any

from anychip.errors import ArgumentError

_ALIASES = (("axis", ("dim", "dims")), ("keepdims", ("keepdim",)))


class DuplicateArgument(ArgumentError, TypeError):
    """Both spellings of one argument given (`dim=` and `axis=`); Python's TypeError."""


def _renames(fn: Callable[..., Any]) -> dict[str, str]:
    """alias -> parameter name; `*` marks a `*dims` parameter (x.flip(*dims)), which takes
    `dims=` or `axis=` as its positional values."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return {}
    out = {}
    for alias, names in _ALIASES:
        target = next((n for n in names if n in params), None)
        if target is not None and alias not in params:
            star = params[target].kind is inspect.Parameter.VAR_POSITIONAL
            out[alias] = "*" if star else target
            if star:
                out[target] = "*"
    return out


def with_aliases(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn, also taking `axis=` / `keepdims=` where it takes `dim=` / `keepdim=`."""
    renames = _renames(fn)
    if not renames or getattr(fn, "_aliased", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            for alias, name in renames.items():
                if alias in kwargs and name == "*":  # flip(axis=0) -> flip(0)
                    dims = kwargs.pop(alias)
                    args = (*args, *(dims if isinstance(dims, (tuple, list)) else (dims,)))
                elif alias in kwargs:
                    if name in kwargs:
                        raise DuplicateArgument(
                            f"{fn.__name__}: got both {name}= and its alias {alias}="
                        )
                    kwargs[name] = kwargs.pop(alias)
        return fn(*args, **kwargs)

    wrapper._aliased = True  # type: ignore[attr-defined]
    return wrapper


def install_class(cls: type) -> None:
    """Wrap every public method of cls (its mixins' included) that takes dim/keepdim."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if inspect.isfunction(attr):
            wrapped = with_aliases(attr)
            if wrapped is not attr:
                setattr(cls, name, wrapped)


def install_module(namespace: MutableMapping[str, Any]) -> None:
    """Wrap the public functions of a module namespace (e.g. `vars(nn.functional)`)."""
    for name, value in list(namespace.items()):
        if not name.startswith("_") and inspect.isfunction(value):
            namespace[name] = with_aliases(value)
