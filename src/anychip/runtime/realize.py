"""Realisation: turn lazy graphs into buffers by scheduling kernels and launching them.

`plan(roots)` schedules a graph into work items (kernel, input buffers, output buffer) and
`launch(items)` runs them; `realize(nodes)` does both. Nodes realised before keep their buffer
(`Node.realised`), so a tensor computed once is never computed again, even from another graph.
A kernel whose output replaces a realised value nothing else can read writes into that
value's buffer (buffer donation, runtime/donate.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from anychip import dtypes
from anychip.dtypes import DType
from anychip.ir.ops import Node, Ops
from anychip.runtime import device as devmod, dispatch, donate, eager_cache
from anychip.runtime.device import Buffer, Kernel, get_backend

DEBUG = devmod.debug_level()


@dataclass(frozen=True, slots=True)
class WorkItem:
    """Run `kernel` on `device`, reading `ins` and writing `out`; `node` is the value it
    computes (recorded as realised once launched). `kernel` is None when `out` is an
    input's buffer seen through a reshape: nothing runs. `scalars` are the CONST nodes
    whose values are the kernel's runtime arguments."""

    node: Node
    kernel: Kernel | None
    ins: tuple[Buffer, ...]
    out: Buffer
    scalars: tuple[Node, ...] = ()
    checks: donate.Checks = ()  # a donating kernel's: what a replay checks (donate.choose)


def buffer_of(node: Node) -> Buffer | None:
    """The buffer holding `node`'s value, if it has been realised."""
    buf: Buffer | None = node.arg if node.op is Ops.BUFFER else node.realised
    return buf


eager_cache._BUFFER_OF[0] = buffer_of  # what `eager_cache.structure` inlines


def remember(node: Node, buf: Buffer) -> None:
    """Record that `buf` holds `node`'s value: the buffer lives as long as the node, and
    later graphs reading the node read the buffer instead of recomputing it. The node
    forgets its sources (no graph walks past a realised node), so the graph behind it is
    freed and its inputs' reference counts say who can still read them (donation)."""
    object.__setattr__(node, "realised", buf)  # the memo field of the frozen Node
    if node.srcs:
        object.__setattr__(node, "srcs", ())


def allocate(device: str, size: int, dtype: DType) -> Buffer:
    devmod.check_size(device, (size,), dtype.itemsize, f"allocate ({dtype.name})")
    return Buffer(device, dtype, size, get_backend(device).allocate(size, dtype))


def from_host(device: str, data: np.ndarray, dtype: DType) -> Buffer:
    """A new buffer on `device` holding `data` (already in dtype's storage form). Booleans
    are made canonical (bytes 0 or 1) here, the one door from the host: numpy views of
    other bytes (`u8.view(bool)`) and files hold any byte, and kernels compute on the byte."""
    if dtype is dtypes.bool_:
        data = canonical_bool(data)
    buf = allocate(device, data.size, dtype)
    get_backend(device).copyin(buf.handle, np.ascontiguousarray(data).reshape(-1))
    return buf


def canonical_bool(data: np.ndarray) -> np.ndarray:
    """`data` as numpy bools whose bytes are 0 or 1 (any nonzero byte is True).

    >>> canonical_bool(np.array([0, 2, 255], np.uint8).view(bool)).view(np.uint8).tolist()
    [0, 1, 1]
    """
    flat = data.view(np.uint8) if data.dtype.itemsize == 1 else data
    out: np.ndarray = np.not_equal(flat, 0)
    return out


def to_host(buf: Buffer) -> np.ndarray:
    """A flat copy of `buf` in host memory, in the dtype's storage form."""
    backend = get_backend(buf.device)
    backend.synchronize()
    data = backend.copyout(buf.handle, buf.size, buf.dtype)
    dispatch.on_host_read(buf, data)  # jit hook: replays check what Python saw here
    return data


def _realise_copies(root: Node) -> None:
    """COPY nodes move data between devices: realise their sources first, then copy."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        n = stack.pop()
        if id(n) in seen or buffer_of(n) is not None:
            continue
        seen.add(id(n))
        if n.op is Ops.COPY:
            (src,) = n.srcs
            sbuf = realize([src])[0]
            remember(n, dispatch.copy(sbuf, n.device))  # dispatch hook: recorded
            continue
        stack.extend(n.srcs)


def plan(roots: list[Node]) -> list[WorkItem]:
    """The work computing `roots` (producers first), output buffers allocated, nothing run.

    >>> import anychip as ac
    >>> x = ac.ones(3)
    >>> [w.kernel.kind.value for w in plan([((x * 2).exp()).node])]
    ['elementwise']
    """
    from anychip.passes.schedule import schedule  # passes sit above the runtime

    todo = [r for r in roots if buffer_of(r) is None]
    for r in todo:
        _realise_copies(r)
    todo = [r for r in todo if buffer_of(r) is None]
    if not todo:
        return []
    made: dict[int, Buffer] = {}
    items: list[WorkItem] = []
    work = schedule(todo, buffer_of)
    gifts = donate.choose(work, todo, buffer_of, dispatch.walk_holders())
    for k, it in enumerate(work):
        ins = tuple(buffer_of(n) or made[id(n)] for n in it.inputs)
        n = it.out
        kernel, gift = it.kernel, gifts.get(k)
        checks: donate.Checks = ()
        if kernel is None:
            out = ins[0]
        elif gift is not None:  # the input's old value is read by nothing after this kernel
            j, checks = gift
            out, kernel = ins[j], replace(kernel, alias=j)
        else:
            out = allocate(n.device, n.numel, n.dtype)
        made[id(n)] = out
        items.append(WorkItem(n, kernel, ins, out, it.scalars, checks))
    return items


def launch(items: list[WorkItem]) -> None:
    """Run planned work in order and remember each computed node's buffer."""
    programs = _compile_all(items)
    for i, w in enumerate(items):
        if w.kernel is not None:
            backend = get_backend(w.out.device)
            program = programs[i]
            n = w.node  # the label ANYCHIP_DEBUG=1 prints, now and when a plan replays it
            label = f"{w.kernel.name:<24} {n.dtype.name:<8} {list(n.shape)}"
            # jit records it; the scalars' nodes let a cached plan pass another graph's values
            if w.kernel.alias is None:
                dispatch.launch(
                    backend, program, w.out, list(w.ins), label, w.scalars, None, w.kernel
                )
            else:
                _launch_donated(w, backend, program, label)
        remember(w.node, w.out)


def _launch_donated(w: WorkItem, backend: Any, program: Any, label: str) -> None:
    """Launch a kernel writing over its input. Interrupted once the backend has written
    (`LAUNCHED`), the node is recorded as computed all the same: its input's old value is
    gone, so recomputing it from that input would apply the update twice."""
    devmod.LAUNCHED.out = 0
    try:
        dispatch.launch(
            backend, program, w.out, list(w.ins), label, w.scalars, None, w.kernel, w.checks
        )
    except KeyboardInterrupt:
        if getattr(devmod.LAUNCHED, "out", 0) == id(w.out):
            remember(w.node, w.out)
        raise
    donate.count()


def _compile_all(items: list[WorkItem]) -> dict[int, Any]:
    """Each item's program (by position), compiled per device in one `compile_many` call
    so a backend can build a schedule's new kernels in parallel."""
    by_device: dict[str, list[int]] = {}
    for i, w in enumerate(items):
        if w.kernel is not None:
            by_device.setdefault(w.out.device, []).append(i)
    programs: dict[int, Any] = {}
    for device, idx in by_device.items():
        kernels = [items[i].kernel for i in idx]
        programs.update(zip(idx, get_backend(device).compile_many(kernels), strict=True))  # type: ignore[arg-type]
    return programs


def realize(nodes: list[Node]) -> list[Buffer]:
    """Compute every node's value on its device; one Buffer per node."""
    # dispatch hook: a graph shaped like one seen before replays its cached launches
    return eager_cache.cached_realize(nodes, _realize, buffer_of, remember)


def _realize(nodes: list[Node]) -> list[Buffer]:
    missing = [n for n in nodes if buffer_of(n) is None]
    if missing:
        launch(plan(missing))
    out: list[Buffer] = []
    for n in nodes:
        buf = buffer_of(n)
        assert buf is not None, f"realize: {n} was not computed"
        out.append(buf)
    return out
