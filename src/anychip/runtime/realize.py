"""Realisation: turn lazy graphs into buffers by scheduling kernels and launching them.

`realize(nodes)` returns one Buffer per node. Nodes realised before are remembered (weakly),
so a tensor computed once is never computed again, even from another tensor's graph.
"""

from __future__ import annotations

import os
import time
import weakref

import numpy as np

from anychip.dtypes import DType
from anychip.ir.ops import Node, Ops
from anychip.runtime import dispatch
from anychip.runtime.device import Buffer, Kernel, get_backend

_REALISED: weakref.WeakKeyDictionary[Node, Buffer] = weakref.WeakKeyDictionary()
DEBUG = int(os.environ.get("ANYCHIP_DEBUG", "0") or 0)


def buffer_of(node: Node) -> Buffer | None:
    """The buffer holding `node`'s value, if it has been realised."""
    if node.op is Ops.BUFFER:
        buf: Buffer = node.arg
        return buf
    return _REALISED.get(node)


def allocate(device: str, size: int, dtype: DType) -> Buffer:
    return Buffer(device, dtype, size, get_backend(device).allocate(size, dtype))


def from_host(device: str, data: np.ndarray, dtype: DType) -> Buffer:
    """A new buffer on `device` holding `data` (already in dtype's storage form)."""
    buf = allocate(device, data.size, dtype)
    get_backend(device).copyin(buf.handle, np.ascontiguousarray(data).reshape(-1))
    return buf


def to_host(buf: Buffer) -> np.ndarray:
    """A flat copy of `buf` in host memory, in the dtype's storage form."""
    backend = get_backend(buf.device)
    backend.synchronize()
    data = backend.copyout(buf.handle, buf.size, buf.dtype)
    dispatch.on_host_read(buf, data)  # jit hook: replays check what Python saw here
    return data


def _lower(root: Node) -> tuple[Kernel, list[Buffer]]:
    """Cut `root`'s graph at realised nodes, which become PARAM inputs of one kernel."""
    inputs: list[Buffer] = []
    index: dict[int, int] = {}
    memo: dict[int, Node] = {}
    stack: list[Node] = [root]
    while stack:  # iterative post-order over the unrealised part of the graph
        n = stack[-1]
        if id(n) in memo:
            stack.pop()
            continue
        buf = buffer_of(n) if n is not root else None
        if buf is not None:
            if id(buf) not in index:
                index[id(buf)] = len(inputs)
                inputs.append(buf)
            memo[id(n)] = Node(Ops.PARAM, n.dtype, n.shape, n.device, (), index[id(buf)])
            stack.pop()
            continue
        pending = [s for s in n.srcs if id(s) not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        memo[id(n)] = Node(
            n.op, n.dtype, n.shape, n.device, tuple(memo[id(s)] for s in n.srcs), n.arg
        )
    return Kernel(memo[id(root)], root.op.name.lower()), inputs


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
            _REALISED[n] = dispatch.copy(sbuf, n.device)  # dispatch hook: recorded
            continue
        stack.extend(n.srcs)


def realize(nodes: list[Node]) -> list[Buffer]:
    """Compute every node's value on its device; one Buffer per node."""
    # dispatch hook: a graph shaped like one seen before replays its cached launches
    return dispatch.cached_realize(nodes, _realize, buffer_of, _REALISED)


def _realize(nodes: list[Node]) -> list[Buffer]:
    out: list[Buffer] = []
    for node in nodes:
        buf = buffer_of(node)
        if buf is None:
            _realise_copies(node)
            buf = buffer_of(node)
        if buf is None:
            kernel, inputs = _lower(node)
            backend = get_backend(node.device)
            buf = allocate(node.device, node.numel, node.dtype)
            program = backend.compile(kernel)
            t0 = time.perf_counter()
            dispatch.launch(backend, program, buf, inputs)  # dispatch hook
            if DEBUG >= 1:
                backend.synchronize()
                ms = (time.perf_counter() - t0) * 1e3
                print(
                    f"[{node.device}] {kernel.name:<12} {node.dtype.name:<8} "
                    f"{list(node.shape)} {ms:8.3f} ms"
                )
            _REALISED[node] = buf
        out.append(buf)
    return out
