"""The Optimizer base class: parameter groups, per-parameter state, zero_grad, step and
state_dict, as in PyTorch.

Subclasses write `_update(group)`; `step()` runs it under no_grad, then realises state and
parameters so each step's graph is computed once and never grows across steps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from anychip.dtypes import float64
from anychip.errors import ArgumentError, AutogradError, DTypeError
from anychip.frontend.creation import tensor
from anychip.frontend.tensor import Tensor, enable_grad, no_grad, realize_together
from anychip.optim import update_cache
from anychip.optim.rowstate import follow_rows
from anychip.runtime import eager_cache

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required: Any = _Required()


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    """ArgumentError unless low <= value (< high)."""
    if value < low or (high is not None and value >= high):
        span = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ArgumentError(f"Invalid {name}: {value} (must be {span})")


class Optimizer:
    """Base class: holds `param_groups` (dicts of 'params' and hyperparameters) and
    `state` (per-parameter tensors such as momentum buffers).

    >>> import anychip as ac
    >>> w = ac.nn.Parameter(ac.ones(2))
    >>> opt = ac.optim.SGD([w], lr=0.5)
    >>> (w * w).sum().backward(); opt.step()
    >>> w.tolist()
    [0.0, 0.0]
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        # (id(group), name) -> (value, 0-d float64 tensor holding it): see `_hyper`
        self._hypers: dict[tuple[int, str], tuple[float, Tensor]] = {}
        if isinstance(params, Tensor):
            raise DTypeError(
                "optimizer: params must be an iterable of Tensors or dicts, got a Tensor; "
                "wrap it in a list"
            )
        groups = list(params)
        if not groups:
            raise ArgumentError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join([*lines, ")"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyperparameters (defaults fill gaps)."""
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise DTypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise AutogradError("optimizer: can't optimize a non-leaf Tensor")
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise ArgumentError(f"parameter group didn't specify a value of required {k!r}")
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        ids = [id(p) for p in group["params"]]
        if len(set(ids)) != len(ids) or seen & set(ids):
            raise ArgumentError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.grad = None if set_to_none else p.grad.zeros_like()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns closure's loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        # a step shaped like one taken before replays its plan (update_cache.py)
        probe = update_cache.probe(self) if closure is None else None
        if probe is not None:
            rec = update_cache.lookup(probe)
            if rec is not None:
                update_cache.replay(probe, rec)
                return loss
            if not update_cache.sighted(probe):
                probe = None  # what it holds would count against donation below
        with no_grad():
            grads = [
                p.grad
                for g in self.param_groups
                for p in g["params"]
                if p.grad is not None and not self._takes_rows(g, p.grad)
            ]
            realize_together(grads)  # each gradient computed once, not per use
            for g in self.param_groups:
                for p in g["params"]:  # state of tables that grew or recycled rows
                    if p.grad is not None and self.state.get(p):
                        follow_rows(self.state[p], p)
                self._update(g)
        if probe is None:
            self._realize()
            return loss
        before = [p.node for p in probe.params]  # their new values, still lazy
        with eager_cache.watching() as seen:
            self._realize()
        update_cache.record(probe, seen, before)
        return loss

    # which steps `update_cache` may replay: `_update(group)` reads nothing but the
    # parameters, their gradients, the group's other values and these as tensors (`_hyper`)
    _TENSOR_HYPERS: tuple[str, ...] = ()

    def _cacheable(self, group: dict[str, Any]) -> bool:
        """Whether `_update(group)` is a graph of the parameters, gradients and group values
        alone (no state, nothing read in Python from a tensor)."""
        return False

    def _takes_rows(self, group: dict[str, Any], grad: Tensor) -> bool:
        """Whether `_update` adds row gradient `grad` (frontend/rowgrad.py) into its table
        as rows, so `step` leaves it unmade."""
        return False

    def _update(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _hyper(self, group: dict[str, Any], name: str) -> Tensor:
        """`group[name]` as a 0-d float64 tensor on the group's device, remade only when the
        value changes: a schedule changing it between steps changes a buffer, not the
        graph, so a jitted step replays its one capture with the new value (`jit_hypers`
        refreshes the tensors before each call)."""
        value, key = float(group[name]), (id(group), name)
        device = group["params"][0].device  # parameters moved after the last step move it
        held = self._hypers.get(key)
        if held is None or held[0] != value or held[1].device != device:
            held = self._hypers[key] = (value, tensor(value, dtype=float64, device=device))
        return held[1]

    def jit_hypers(self) -> tuple[frozenset[tuple[int, str]], list[Tensor]]:
        """The (group index, name) of the hyperparameters `_update` reads as tensors and
        those tensors, each first remade if its group's value changed: `anychip.jit` passes
        the tensors as arguments and keeps these values out of its signature."""
        names, tensors = [], []
        for i, g in enumerate(self.param_groups):
            for name in g:
                if (id(g), name) in self._hypers:
                    names.append((i, name))
                    tensors.append(self._hyper(g, name))
        return frozenset(names), tensors

    def _realize(self) -> None:
        # state and parameters in one schedule: a parameter update reading new state (a
        # momentum buffer) reads the state kernel's output, and the step is one cached plan
        todo: list[Tensor] = []
        for g in self.param_groups:
            for p in g["params"]:
                todo += [v for v in self.state.get(p, {}).values() if isinstance(v, Tensor)]
        realize_together(todo + [p for g in self.param_groups for p in g["params"]])

    # --- saving and restoring -------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{'state': {index: {name: value}}, 'param_groups': [{..., 'params': [index]}]},
        with parameters numbered in group order as in PyTorch."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in g["params"]]
            groups.append(packed)
        state = {
            index[id(p)]: {k: v.detach() if isinstance(v, Tensor) else v for k, v in s.items()}
            for p, s in self.state.items()
            if id(p) in index
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by `state_dict` (same group layout)."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ArgumentError(
                f"loaded state dict has {len(saved)} parameter groups, the optimizer has "
                f"{len(self.param_groups)}"
            )
        for mine, theirs in zip(self.param_groups, saved, strict=True):
            if len(mine["params"]) != len(theirs["params"]):
                raise ArgumentError(
                    "loaded state dict contains a parameter group that doesn't match the size "
                    f"of optimizer's group ({len(theirs['params'])} vs {len(mine['params'])})"
                )
        by_index = {
            i: p
            for mine, theirs in zip(self.param_groups, saved, strict=True)
            for i, p in zip(theirs["params"], mine["params"], strict=True)
        }
        self.state = defaultdict(dict)
        for i, s in state_dict["state"].items():
            p = by_index.get(int(i))
            if p is not None:
                self.state[p] = {k: _cast_state(k, v, p) for k, v in s.items()}
        for mine, theirs in zip(self.param_groups, saved, strict=True):
            mine.update({k: v for k, v in theirs.items() if k != "params"})


def step_counter(like: Tensor) -> Tensor:
    """An optimizer's step count as a 0-d float64 tensor on `like`'s device (torch keeps a
    tensor too): bias corrections and decayed rates computed from it change value but not
    graph, so every step reuses one compiled kernel and a jitted step replays.

    >>> import anychip as ac
    >>> (step_counter(ac.zeros(3)) + 1).item()
    1.0
    """
    return tensor(0.0, dtype=float64, device=like.device)


def _cast_state(key: str, value: Any, param: Tensor) -> Any:
    if not isinstance(value, Tensor):
        return value
    value = value.detach().to(param.device)
    if key != "step" and value.dtype.is_floating_point:
        value = value.to(param.dtype)
    return value
