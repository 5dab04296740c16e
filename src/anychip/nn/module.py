"""`Module` and `Parameter`: the container every layer and model is built from.

A Module registers the Parameters, buffers and sub-Modules assigned to it as attributes,
and walks them for `parameters()`, `state_dict()`, `to()` and `train()`/`eval()`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

from anychip.errors import Error, ShapeError
from anychip.frontend.tensor import Tensor, no_grad

M = TypeVar("M", bound="Module")


class StateDictError(ShapeError, RuntimeError):
    """`load_state_dict` found missing or unexpected keys or a wrong shape.

    It is a RuntimeError (as in PyTorch) and an anychip ShapeError (a ValueError).
    """


class Parameter(Tensor):
    """A tensor that is a module's learnable weight: it requires grad and a Module
    registers it when it is assigned as an attribute.

    >>> import anychip as ac
    >>> p = ac.nn.Parameter(ac.zeros(2))
    >>> p.requires_grad, p.shape
    (True, (2,))
    """

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = Tensor([])
        src = data.detach() if isinstance(data, Tensor) else Tensor(data)
        self._init(src)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(strict=False)` could not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


# what `anychip.jit` reads of a module: the names of its parameters then buffers (a buffer
# name marked "buffer"), those tensors in that order, and each module's `training`
Members = tuple[tuple[Any, ...], list[Tensor], tuple[bool, ...]]
_CHANGES = [0]  # bumped by every change to any module's registries, attributes or modes


class _Registry(OrderedDict[str, Any]):
    """A module's parameters, buffers or submodules; each change bumps `_CHANGES`, so
    `Module._members` can keep its walk until some module changes."""

    def __setitem__(self, key: str, value: Any) -> None:
        _CHANGES[0] += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        _CHANGES[0] += 1
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        _CHANGES[0] += 1
        return super().pop(key, *default)

    def popitem(self, last: bool = True) -> tuple[str, Any]:
        _CHANGES[0] += 1
        return super().popitem(last)

    def clear(self) -> None:
        _CHANGES[0] += 1
        super().clear()

    def setdefault(self, key: str, default: Any = None) -> Any:
        _CHANGES[0] += 1
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        _CHANGES[0] += 1
        super().update(*args, **kwargs)

    def move_to_end(self, key: str, last: bool = True) -> None:
        _CHANGES[0] += 1
        super().move_to_end(key, last)


class Module:
    """Base class of every layer and model: subclass it, assign layers and Parameters
    in `__init__`, and write `forward`.

    >>> import anychip as ac
    >>> class Affine(ac.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.scale = ac.nn.Parameter(ac.ones(3))
    ...     def forward(self, x):
    ...         return x * self.scale
    >>> [name for name, _ in Affine().named_parameters()]
    ['scale']
    """

    training: bool
    _parameters: dict[str, Parameter | None]
    _buffers: dict[str, Tensor | None]
    _modules: dict[str, Module | None]
    _non_persistent: set[str]

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", _Registry())
        object.__setattr__(self, "_buffers", _Registry())
        object.__setattr__(self, "_modules", _Registry())
        object.__setattr__(self, "_non_persistent", set())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing "forward"')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # --- attribute registration -----------------------------------------------------
    def _registries(self) -> tuple[dict[str, Any], ...]:
        try:
            return (self._parameters, self._buffers, self._modules)
        except AttributeError:
            raise Error(
                f"{type(self).__name__}: call super().__init__() before assigning attributes"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        params, buffers, modules = self._registries()
        _CHANGES[0] += 1  # `training`, or an attribute a subclass walks
        if isinstance(value, Parameter):
            self._forget(name, params)  # a name reassigned keeps its place (as in torch)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name, modules)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} "
                    "(a Parameter or None is required)"
                )
            params[name] = None
        elif name in modules and value is None:
            modules[name] = None
        elif name in buffers and (value is None or isinstance(value, Tensor)):
            buffers[name] = value
        else:
            self._forget(name)
            object.__setattr__(self, name, value)

    def _forget(self, name: str, keep: dict[str, Any] | None = None) -> None:
        """Drop `name` from the registries other than `keep` and from the plain attributes."""
        for reg in self._registries():
            if reg is not keep:
                reg.pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: look in the registries
        d = self.__dict__
        for reg in ("_parameters", "_buffers", "_modules"):
            if reg in d and name in d[reg]:
                return d[reg][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for reg in self._registries():
            if name in reg:
                del reg[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: {name!r} must be a Parameter or None, "
                f"got {type(param).__name__}"
            )
        self._check_name(name, "register_parameter")
        self._forget(name, self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that belongs to the module's state but is not learned (running stats).

        >>> import anychip as ac
        >>> m = ac.nn.Module(); m.register_buffer("count", ac.zeros(1))
        >>> list(m.state_dict())
        ['count']
        """
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None")
        self._check_name(name, "register_buffer")
        self._forget(name, self._buffers)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module, got {type(module).__name__}")
        self._check_name(name, "add_module")
        self._forget(name, self._modules)
        self._modules[name] = module

    register_module = add_module

    def _check_name(self, name: str, op: str) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f'{op}: name must be a non-empty string without ".", got {name!r}')

    # --- walking the tree -----------------------------------------------------------
    def named_modules(
        self, memo: set[int] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                sub = f"{prefix}.{name}" if prefix else name
                yield from child.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, c in self.named_children():
            yield c

    def _named_members(
        self, registry: str, prefix: str, recurse: bool, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        mods = self.named_modules(prefix=prefix) if recurse else iter([(prefix, self)])
        for mod_prefix, mod in mods:
            for name, value in getattr(mod, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, each shared Parameter once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def _members(self) -> Members:
        """`named_parameters()`, `named_buffers()` and each module's `training` (`Members`),
        kept until some module changes (`anychip.jit` reads them at every training step)."""
        memo = self.__dict__.get("_members_memo")
        if memo is not None and memo[0] == _CHANGES[0]:
            return memo[1]  # type: ignore[no-any-return]
        named = [*self.named_parameters(), *(((n, "buffer"), b) for n, b in self.named_buffers())]
        modes = tuple(m.training for m in self.modules())
        members = tuple(n for n, _ in named), [t for _, t in named], modes
        object.__setattr__(self, "_members_memo", (_CHANGES[0], members))
        return members

    def get_submodule(self, target: str) -> Module:
        mod: Module = self
        for part in target.split(".") if target else []:
            child = mod._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(mod).__name__} has no submodule {part!r}")
            mod = child
        return mod

    def apply(self: M, fn: Callable[[Module], Any]) -> M:
        """Call `fn` on every submodule (children first) and then on self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes and gradients --------------------------------------------------------
    def train(self: M, mode: bool = True) -> M:
        """Set training mode (Dropout drops) on self and every submodule; returns self."""
        if not isinstance(mode, bool):
            raise TypeError("train: mode is expected to be a bool")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        _CHANGES[0] += 1
        return self

    def eval(self: M) -> M:
        return self.train(False)

    def requires_grad_(self: M, requires_grad: bool = True) -> M:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is not None:
                p.grad = None if set_to_none else p.grad.zeros_like()

    # --- moving ---------------------------------------------------------------------
    def to(self: M, *args: Any, **kwargs: Any) -> M:
        """Move (and for floating point tensors, cast) parameters and buffers in place:
        Parameters keep their identity, so an optimizer built before still holds them.

        >>> import anychip as ac
        >>> ac.nn.Linear(2, 3).to(ac.float64).weight.dtype
        anychip.float64
        """

        def convert(t: Tensor) -> Tensor:
            if t.dtype.is_floating_point:
                return t.to(*args, **kwargs)
            kept = [a for a in args if not _is_dtype_arg(a)]
            return t.to(*kept, **{k: v for k, v in kwargs.items() if k != "dtype"})

        with no_grad():
            for m in self.modules():
                for p in m._parameters.values():
                    if p is None:
                        continue
                    p.data = convert(p.detach())
                    if p.grad is not None:
                        p.grad = convert(p.grad)
                for name, b in m._buffers.items():
                    if b is not None:
                        m._buffers[name] = convert(b)
        return self

    def float(self: M) -> M:
        from anychip import dtypes

        return self.to(dtypes.float32)

    def double(self: M) -> M:
        from anychip import dtypes

        return self.to(dtypes.float64)

    def half(self: M) -> M:
        from anychip import dtypes

        return self.to(dtypes.float16)

    def bfloat16(self: M) -> M:
        from anychip import dtypes

        return self.to(dtypes.bfloat16)

    # --- state ----------------------------------------------------------------------
    def state_dict(
        self, destination: Any = None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict[str, Tensor]:
        """Every parameter and persistent buffer by dotted name.

        The values are snapshots: a later in-place update of a parameter does not change
        them (lazy tensors are immutable values).

        >>> import anychip as ac
        >>> list(ac.nn.Linear(2, 3).state_dict())
        ['weight', 'bias']
        """
        out: OrderedDict[str, Tensor] = OrderedDict() if destination is None else destination
        for key, (_, _, t) in self._state_slots(prefix.rstrip(".")).items():
            out[key] = t if keep_vars else t.detach()
        for dot, mod in self._own_state_modules(prefix.rstrip(".")):
            out.update((dot + k, v) for k, v in mod._own_state().items())
        return out

    # A module whose saved state is not its parameters and buffers (anychip.rec's tables
    # save only their used rows, with their ids) names its keys in _own_state_keys and
    # writes and reads them in _own_state and _load_own_state.
    def _own_state_keys(self) -> tuple[str, ...] | None:
        return None

    def _own_state(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def _load_own_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _own_state_modules(self, prefix: str = "") -> list[tuple[str, Module]]:
        """(dotted prefix with its dot, module) of each module that keeps its own state."""
        return [
            (f"{p}." if p else "", m)
            for p, m in self.named_modules(prefix=prefix, remove_duplicate=False)
            if m._own_state_keys() is not None
        ]

    def _state_slots(self, prefix: str = "") -> dict[str, tuple[Module, str, Tensor]]:
        """Dotted name -> (owning module, attribute, current tensor) for the state dict."""
        slots: dict[str, tuple[Module, str, Tensor]] = {}
        for mod_prefix, mod in self.named_modules(prefix=prefix, remove_duplicate=False):
            if mod._own_state_keys() is not None:
                continue
            dot = f"{mod_prefix}." if mod_prefix else ""
            for name, p in mod._parameters.items():
                if p is not None:
                    slots[dot + name] = (mod, name, p)
            for name, b in mod._buffers.items():
                if b is not None and name not in mod._non_persistent:
                    slots[dot + name] = (mod, name, b)
        return slots

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy values from `state_dict` into this module's parameters and buffers.

        With `strict`, missing or unexpected keys raise StateDictError; a shape mismatch
        always does. Returns the (missing_keys, unexpected_keys) found.
        """
        slots = self._state_slots()
        owners = self._own_state_modules()
        expected = set(slots) | {d + k for d, m in owners for k in m._own_state_keys() or ()}
        missing = [k for k in slots if k not in state_dict]
        missing += [
            d + k for d, m in owners for k in m._own_state_keys() or () if d + k not in state_dict
        ]
        unexpected = [k for k in state_dict if k not in expected]
        problems = []
        for key, (_, _, cur) in slots.items():
            if key in state_dict:
                shape = tuple(getattr(state_dict[key], "shape", ()))
                if shape != cur.shape:
                    problems.append(
                        f"size mismatch for {key}: copying a param with shape {shape} from "
                        f"the checkpoint, the shape in the current model is {cur.shape}"
                    )
        if strict:
            if unexpected:
                problems.insert(0, f"Unexpected key(s) in state_dict: {_keys(unexpected)}")
            if missing:
                problems.insert(0, f"Missing key(s) in state_dict: {_keys(missing)}")
        if problems:
            raise StateDictError(
                f"load_state_dict: error(s) in loading state_dict for {type(self).__name__}:"
                + "".join(f"\n\t{p}" for p in problems)
            )
        with no_grad():
            for key, (mod, name, cur) in slots.items():
                if key not in state_dict:
                    continue
                value = state_dict[key]
                value = value if isinstance(value, Tensor) else Tensor(value)
                value = value.detach().to(cur.device, cur.dtype)
                if isinstance(cur, Parameter):
                    cur.data = value
                else:
                    mod._buffers[name] = value
            for dot, own in owners:  # all of its keys or none (strict=False: left as is)
                keys = own._own_state_keys() or ()
                if all(dot + k in state_dict for k in keys):
                    own._load_own_state({k: state_dict[dot + k] for k in keys})
        return IncompatibleKeys(missing, unexpected)

    # --- printing -------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's repr (its settings)."""
        return ""

    def __repr__(self) -> str:
        lines = [
            f"({name}): " + _indent(repr(m)) for name, m in self._modules.items() if m is not None
        ]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = ([extra] if extra else []) + lines
        return f"{type(self).__name__}(\n" + "".join(f"  {ln}\n" for ln in body) + ")"


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")


def _keys(keys: list[str]) -> str:
    return ", ".join(f'"{k}"' for k in keys) + "."


def _is_dtype_arg(a: Any) -> bool:
    from anychip import dtypes

    return isinstance(a, dtypes.DType) or (isinstance(a, str) and a in dtypes.BY_NAME)
