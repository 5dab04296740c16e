"""Cheap dispatch: record the kernel launches that realise a graph as a replayable Plan.
The eager cache (`runtime/eager_cache.py`) keeps plans by the graph's structure, so an op
seen before is never scheduled again; `anychip.jit` keeps them per function signature.

Every launch goes through `launch`, which also feeds the active recorders (the eager
cache and `anychip.jit`) and the launch watchers (`anychip.profile`). A Plan is that
record with buffers turned into slots: replaying it allocates fresh outputs and launches
the same compiled programs on new input buffers.

Threads: recorders and watchers are per thread (a launch is seen only by those its own
thread opened).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from anychip.errors import Error
from anychip.ir.ops import Node
from anychip.runtime import donate
from anychip.runtime.device import (
    LAUNCHED,
    Backend,
    Buffer,
    Kernel,
    Scalar,
    debug_level,
    get_backend,
)
from anychip.runtime.replay import EagerSequences, Replayer, eager_run

DEBUG = debug_level()


class JitError(Error, RuntimeError):
    """A function `anychip.jit` cannot capture faithfully (random draws, in-place updates of
    tensors that are not its arguments, changes to an argument's autograd history)."""


class GuardFailed(Exception):
    """A replayed host read saw other values than the capture did: the plan does not apply."""


# --- recording -----------------------------------------------------------------------------
LAUNCH, COPY, READ, HOST = "launch", "copy", "read", "host"


@dataclass
class Step:
    """One recorded event: a LAUNCH of `program` on `backend` writing `out` from `ins` with
    runtime `scalars` (the values of the CONST nodes `sources`), a COPY of ins[0] into
    `out` (another device), a READ of ins[0] to the host that saw `value` (the
    caller's Python may depend on it: replays check it, as a guard), or a HOST step:
    `program` run on the host over the values of `ins`, its result put in `out`."""

    kind: str
    ins: list[Buffer]
    out: Buffer | None = None
    backend: Backend | None = None
    program: Any = None
    value: bytes = b""
    label: str = ""  # what ANYCHIP_DEBUG=1 prints for a launch: kernel, dtype, shape
    scalars: tuple[Scalar, ...] = ()
    sources: tuple[Node, ...] = ()
    kernel: Any = None  # the launch's Kernel (a replay may compile a donating variant)
    checks: tuple[tuple[Node, int], ...] = ()  # a donating launch's (donate.choose)


@dataclass(eq=False)  # recorders are removed from the active list by identity
class Recorder:
    """The steps seen while active, in order."""

    steps: list[Step] = field(default_factory=list)
    host_reads: int = 0


_LOCAL = threading.local()  # .recorders: this thread's active recorders


def _recorders() -> list[Recorder]:
    recs: list[Recorder] | None = getattr(_LOCAL, "recorders", None)
    if recs is None:
        recs = _LOCAL.recorders = []
    return recs


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    """Record every launch, copy and host read this thread makes inside the block
    (recorders nest; other threads' work is not recorded)."""
    rec = Recorder()
    recs = _recorders()
    recs.append(rec)
    try:
        yield rec
    finally:
        recs.remove(rec)


def walk_holders() -> int | None:
    """For buffer donation (runtime/donate.py): None while a capture other than the eager
    cache's own records this thread's launches (a replay of a record that wrote over a
    buffer it did not make would compute from the new value); else how many lists of the
    eager cache's walk (`structure`) hold each graph node and leaf buffer (0 or 1)."""
    own = getattr(_LOCAL, "own", None)
    if any(r is not own for r in getattr(_LOCAL, "recorders", ())):
        return None
    held: int = getattr(_LOCAL, "held", 0)
    return held


@contextlib.contextmanager
def _walked(rec: Recorder | None) -> Iterator[None]:
    """Inside: `structure`'s lists hold the graph (and `rec` is the eager cache's own)."""
    before = getattr(_LOCAL, "held", 0), getattr(_LOCAL, "own", None)
    _LOCAL.held, _LOCAL.own = 1, rec
    try:
        yield
    finally:
        _LOCAL.held, _LOCAL.own = before


def launch(
    backend: Backend,
    program: Any,
    out: Buffer,
    ins: list[Buffer],
    label: str = "",
    sources: tuple[Node, ...] = (),
    scalars: tuple[Scalar, ...] | None = None,
    kernel: Any = None,
    checks: tuple[tuple[Node, int], ...] = (),
) -> None:
    """Run a compiled program (the one door to `Backend.launch`), telling the recorders;
    with ANYCHIP_DEBUG=1 print `label` (kernel name, dtype, shape) and the time it took.
    The runtime scalars are `scalars`, or else the values of the CONST nodes `sources`;
    `kernel` (the program's Kernel) lets a plan made of the record compile variants;
    `checks` come with a kernel writing into a donated input (runtime/donate.py).
    `kernel` also goes to the launch watchers (the profiler)."""
    if scalars is None:
        scalars = tuple([n.arg for n in sources])
    if DEBUG >= 1 or (_WATCHING[0] and getattr(_LOCAL, "watchers", None)):
        _timed(backend, program, out, ins, scalars, label, kernel)
    else:
        _run(backend, program, out, ins, scalars)
    for rec in getattr(_LOCAL, "recorders", ()):
        rec.steps.append(
            Step(LAUNCH, ins, out, backend, program, b"", label, scalars, sources, kernel, checks)
        )


# --- launch watchers (anychip.profile) --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Launch:
    """What a watcher is told about one launch: `wall_s` is the host's measured time
    (synchronised before and after), `stats` the backend's `launch_stats()` (or None)."""

    backend: Backend
    kernel: Kernel | None
    out: Buffer
    ins: list[Buffer]
    label: str
    start: float  # time.perf_counter() when it started
    wall_s: float
    stats: dict[str, Any] | None


Watcher = Callable[[Launch], None]
_WATCHING = [0]  # watchers open in any thread: while 0, a launch looks no further
_WATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def watching(fn: Watcher) -> Iterator[None]:
    """Call `fn(Launch)` after each kernel launch this thread makes inside the block
    (watchers nest; launches of other threads are not seen). When no thread watches, a
    launch costs one list read more than an unwatched one."""
    ws: list[Watcher] | None = getattr(_LOCAL, "watchers", None)
    if ws is None:
        ws = _LOCAL.watchers = []
    ws.append(fn)
    with _WATCH_LOCK:
        _WATCHING[0] += 1
    try:
        yield
    finally:
        ws.remove(fn)
        with _WATCH_LOCK:
            _WATCHING[0] -= 1


def _timed(
    backend: Backend,
    program: Any,
    out: Buffer,
    ins: list[Buffer],
    scalars: tuple[Scalar, ...],
    label: str,
    kernel: Kernel | None,
) -> None:
    backend.synchronize()
    t0 = time.perf_counter()
    _run(backend, program, out, ins, scalars)
    backend.synchronize()
    wall = time.perf_counter() - t0
    stats = backend.launch_stats()
    if DEBUG >= 1:
        print(f"[{out.device}] {label or '(kernel)':<48} {wall * 1e3:8.3f} ms{_sim(stats)}")
    watchers: list[Watcher] = getattr(_LOCAL, "watchers", [])
    if watchers:
        event = Launch(backend, kernel, out, ins, label, t0, wall, stats)
        for fn in list(watchers):
            fn(event)


def _sim(stats: dict[str, Any] | None) -> str:
    """A simulated launch's time and each unit's busy fraction, for ANYCHIP_DEBUG=1."""
    if not stats:
        return ""
    units = " ".join(f"{u} {f:.0%}" for u, f in sorted(stats.get("units", {}).items()))
    return f"  simulated {float(stats['time_s']) * 1e6:.3f} us  {units}".rstrip()


def _run(
    backend: Backend, program: Any, out: Buffer, ins: list[Buffer], scalars: tuple[Scalar, ...]
) -> None:
    if scalars:
        backend.launch(program, out, ins, scalars)
    else:  # a kernel without runtime scalars: the contract's three-argument form
        backend.launch(program, out, ins)


def copy(src: Buffer, device: str) -> Buffer:
    """A copy of `src` on `device` (through host memory), telling the recorders."""
    dst = _copy(src, device)
    for rec in getattr(_LOCAL, "recorders", ()):
        rec.steps.append(Step(COPY, [src], dst))
    return dst


def _copy(src: Buffer, device: str) -> Buffer:
    sb = get_backend(src.device)
    sb.synchronize()
    return _upload(device, src.dtype, sb.copyout(src.handle, src.size, src.dtype))


def _upload(device: str, dtype: Any, data: np.ndarray) -> Buffer:
    """A new buffer on `device` holding flat host `data` (in dtype's storage form)."""
    backend = get_backend(device)
    out = Buffer(device, dtype, data.size, backend.allocate(data.size, dtype))
    backend.copyin(out.handle, data)
    return out


HostFn = Callable[..., np.ndarray]


def host_call(
    fn: HostFn,
    ins: list[Buffer],
    device: str,
    dtype: Any,
    data: np.ndarray | None = None,
    size: int | None = None,
) -> Buffer:
    """A buffer on `device` holding `fn(*values of ins)` (flat host arrays in storage form
    in, an array of `dtype`'s storage form out), told to the recorders as one HOST step.

    For host work whose result feeds kernels but whose values Python never looks at (a
    jagged batch laid out into slots): a replay runs `fn` again on the replay's own
    buffers, where a host read would be a guard that fails on every new batch. The
    result's size must be the capture's, or the replay raises GuardFailed. `data`: the
    result when the caller has it already (a replay, which checked its size). `size`: the
    result's size when the caller knows it, so a `fn` with a `direct` method may write it
    straight into the new buffer (see `_addresses`)."""
    out = None
    direct = getattr(fn, "direct", None) if data is None else None
    if direct is not None and size is not None:
        backend = get_backend(device)
        made = Buffer(device, dtype, size, backend.allocate(size, dtype))
        at = _addresses([*ins, made])
        if at is not None and direct(at[:-1], at[-1]):
            out = made
    if out is None:
        out = _upload(device, dtype, _host_values(fn, ins) if data is None else data)
    for rec in getattr(_LOCAL, "recorders", ()):
        rec.steps.append(Step(HOST, list(ins), out, program=fn))
    return out


def _host_values(fn: HostFn, ins: list[Buffer]) -> np.ndarray:
    """fn on the values of `ins`: views of buffers in host memory (`host_view` waits for
    the queued work that uses each one, not for all of it), copies of the others; fn's
    result is copied before anything can write into what it may view."""
    arrays = []
    for b in ins:
        backend = get_backend(b.device)
        view = backend.host_view(b.handle)
        if view is not None:
            view = view[: b.size]
            view.flags.writeable = False  # fn reads its inputs; the buffer stays as it is
            arrays.append(view)
            continue
        backend.synchronize()
        arrays.append(backend.copyout(b.handle, b.size, b.dtype))
    return np.ascontiguousarray(fn(*arrays)).reshape(-1)


# a buffer as a host step's C code sees it: (address, elements, dtype)
Address = tuple[int, int, Any]


def _addresses(bufs: list[Buffer]) -> list[Address] | None:
    """Each buffer's host address, size and dtype, or None when one is not in host memory.
    A host function with a `direct(ins, out)` method (`(address, size, dtype)` each) may
    compute a replayed HOST step in place: it returns False to be called the usual way."""
    out = []
    for b in bufs:
        at = get_backend(b.device).host_address(b.handle)  # waits for work on b
        if at is None:
            return None
        out.append((at, b.size, b.dtype))
    return out


def on_host_read(buf: Buffer, data: np.ndarray) -> None:
    """Called with each buffer read back to the host (`.numpy()`, `.item()`) and its data."""
    for rec in getattr(_LOCAL, "recorders", ()):
        rec.host_reads += 1
        rec.steps.append(Step(READ, [buf], value=data.tobytes()))


# --- plans ---------------------------------------------------------------------------------
@dataclass
class _PlanStep:
    kind: str
    ins: tuple[int, ...]  # env slots read
    out: int  # env slot written; == len(env) at run time means a fresh buffer
    backend: Backend | None
    program: Any
    meta: tuple[str, Any, int]  # the output's (device, dtype, size)
    value: bytes
    label: str = ""
    # per runtime scalar: (position of its CONST node in the replayed graph's walk, value
    # at capture); position -1 replays the captured value (jit: a captured constant)
    scalars: tuple[tuple[int, Scalar], ...] = ()
    kernel: Any = None  # the Kernel of a launch
    # donation (`Plan.donate`): an input slot this fresh output may be written into, and
    # the program compiled for that (the kernel with `alias` set)
    donor: int = -1
    donor_program: Any = None
    # an eager plan's donating step: (position in the graph's walk, count) to check at
    # each replay (donate.clear); `program` is then compiled at the first replay without
    checks: tuple[tuple[int, int], ...] = ()
    # the program as a direct call (`Backend.direct`), for a replay nothing watches; None
    # when the backend has none for it (a chunked kernel) or the step is not a launch
    direct: Any = None


@dataclass
class Plan:
    """Steps replayable on new inputs. Env slots: inputs, then constants, then one per
    fresh buffer the steps make; `outputs` are env slots. Raises GuardFailed (before any
    argument is changed) when a host read sees other values than at capture."""

    steps: list[_PlanStep]
    consts: list[Buffer]
    outputs: list[int]
    # `own`: replays keep the intermediates in buffers of the plan's own (runtime/replay.py);
    # for plans whose runtime scalars are their captured values (anychip.jit)
    own: bool = False
    replayer: Replayer | None = field(default=None, repr=False)
    eager: EagerSequences | None = field(default=None, repr=False)  # replay.eager_run

    def run(
        self,
        inputs: list[Buffer],
        nodes: list[Node] | None = None,
        donated: frozenset[int] = frozenset(),
    ) -> list[Buffer]:
        """Replay on `inputs`; `nodes` (the graph's nodes in the walk order the plan was
        made with) give the runtime scalars' new values; the steps at the positions in
        `donated` write into their donor input's buffer (see `donate`)."""
        quiet = not _observed()
        if self.own and nodes is None and quiet:
            if self.replayer is None:
                self.replayer = Replayer(self, len(inputs))
            fast = self.replayer.run(inputs, donated)
            if fast is not None:
                return fast
        if quiet and nodes is not None and not self.own:  # an eager plan: one sequence
            fast = eager_run(self, inputs, nodes, donated)
            if fast is not None:
                return fast
        env = [*inputs, *self.consts]
        # nothing watches (no recorder, watcher or ANYCHIP_DEBUG): a plain launch into a
        # fresh buffer calls the program directly, as `launch` would, a few calls less each
        waited = None  # the backend last synchronised before a direct call
        try:
            for at, s in enumerate(self.steps):
                if s.kind is LAUNCH:
                    fn = s.direct if quiet and not s.checks and at not in donated else None
                    if fn is not None and s.out >= len(env):
                        dev, dt, size = s.meta
                        backend = s.backend
                        assert backend is not None  # `direct` is set for launches only
                        if backend is not waited:  # sequences in flight (Backend.sequence)
                            backend.synchronize()
                            waited = backend
                        made = Buffer(dev, dt, size, backend.allocate(size, dt))
                        ptrs = [b.handle.ptr for b in map(env.__getitem__, s.ins)]
                        fn(made.handle.ptr, *ptrs, *self._scalars(s, nodes))
                        env.append(made)
                    else:
                        self._launch(at, s, env, nodes, donated)
                elif s.kind is COPY:
                    env.append(copy(env[s.ins[0]], s.meta[0]))
                else:
                    out = host_step(s, env, None)
                    if out is not None:
                        env.append(out)
        except KeyboardInterrupt as e:
            # env holds the values computed so far; a donated write that ran to its end
            # counts too (its input's old value is gone): the caller records them
            written = getattr(e, "anychip_written", None)
            if isinstance(written, Buffer) and getattr(LAUNCHED, "out", 0) == id(written):
                env.append(written)
            e.anychip_plan_env = env  # type: ignore[attr-defined]
            raise
        if DEBUG >= 1:
            print(f"[plan] replayed {len(self.steps)} steps")
        return [env[i] for i in self.outputs]

    def _launch(
        self,
        at: int,
        s: _PlanStep,
        env: list[Buffer],
        nodes: list[Node] | None,
        donated: frozenset[int],
    ) -> None:
        """Run launch step `s` (at position `at`); a fresh output joins env once computed."""
        backend = s.backend
        assert backend is not None
        program, fresh = s.program, s.out >= len(env)
        if not fresh:
            out = env[s.out]
        elif at in donated or (
            s.checks and nodes is not None and donate.clear(nodes, s.checks, env[s.donor])
        ):  # the input's old value is read by nothing after this
            out, program = env[s.donor], s.donor_program
            LAUNCHED.out = 0
            vals = self._scalars(s, nodes)
            ins = list(map(env.__getitem__, s.ins))
            try:
                launch(backend, program, out, ins, s.label, (), vals, s.kernel)
            except KeyboardInterrupt as e:
                e.anychip_written = out  # type: ignore[attr-defined]
                raise
            env.append(out)
            donate.count()
            return
        else:
            if program is None:  # an eager donating step that cannot donate now
                program = s.program = backend.compile(replace(s.kernel, alias=None))
            dev, dt, size = s.meta
            out = Buffer(dev, dt, size, backend.allocate(size, dt))
        ins = list(map(env.__getitem__, s.ins))
        launch(backend, program, out, ins, s.label, (), self._scalars(s, nodes), s.kernel)
        if fresh:
            env.append(out)

    @staticmethod
    def _scalars(s: _PlanStep, nodes: list[Node] | None) -> tuple[Scalar, ...]:
        if not s.scalars:
            return ()  # most kernels take none: no comprehension to run
        return tuple([v if p < 0 or nodes is None else nodes[p].arg for p, v in s.scalars])


def host_step(s: _PlanStep, env: list[Buffer], into: Buffer | None) -> Buffer | None:
    """Replay a HOST step (its result: a new buffer, or written `into` one), a READ (a
    guard) or a COPY `into` a buffer, told to the recorders. GuardFailed when the read
    value or the host result's size differs from the capture's."""
    ins = [env[i] for i in s.ins]
    if s.kind is COPY and into is not None:
        src = get_backend(ins[0].device)
        src.synchronize()
        get_backend(into.device).copyin(
            into.handle, src.copyout(ins[0].handle, ins[0].size, ins[0].dtype)
        )
        return None
    if s.kind is HOST:
        dev, dt, size = s.meta
        direct = getattr(s.program, "direct", None)
        if direct is not None and into is not None:  # C reading and writing host memory
            at = _addresses([*ins, into])
            if at is not None and direct(at[:-1], at[-1]):
                return None
        data = _host_values(s.program, ins)
        if data.size != size:  # this batch needs another layout: capture again
            raise GuardFailed
        if into is None:
            return host_call(s.program, ins, dev, dt, data)
        get_backend(dev).copyin(into.handle, data)
        return None
    backend = get_backend(ins[0].device)
    backend.synchronize()
    data = backend.copyout(ins[0].handle, ins[0].size, ins[0].dtype)
    on_host_read(ins[0], data)
    if data.tobytes() != s.value:
        raise GuardFailed
    return None


def _observed() -> bool:
    """Whether this thread's launches are watched or recorded (or printed): a replay must
    then go through `launch`, step by step."""
    return bool(
        DEBUG >= 1
        or getattr(_LOCAL, "recorders", None)
        or (_WATCHING[0] and getattr(_LOCAL, "watchers", None))
    )


_NO_META: tuple[str, Any, int] = ("", None, 0)  # a READ writes nothing


def make_plan(
    rec: Recorder,
    inputs: list[Buffer],
    outputs: list[Buffer],
    positions: dict[int, int] | None = None,
) -> Plan:
    """Turn recorded steps into a Plan: `inputs` become slots, buffers the steps make become
    fresh allocations, any other buffer read (or returned) is kept as a constant. Runtime
    scalars whose CONST node has a position in `positions` (id(node) -> index in the walk
    order) are read from the replayed graph; the others replay their captured value."""
    where = positions or {}
    slot: dict[int, int] = {}
    for i, b in enumerate(inputs):
        slot.setdefault(id(b), i)
    made = {id(s.out) for s in rec.steps if s.out is not None}
    consts: list[Buffer] = []
    for b in [b for s in rec.steps for b in s.ins] + outputs:
        if id(b) not in slot and id(b) not in made:
            slot[id(b)] = len(inputs) + len(consts)
            consts.append(b)
    steps: list[_PlanStep] = []
    size = len(inputs) + len(consts)
    for s in rec.steps:
        refs = tuple(slot[id(b)] for b in s.ins)
        o, meta, donor = -1, _NO_META, -1
        checks = tuple([(where.get(id(n), -1), c) for n, c in s.checks])
        if s.out is not None:
            meta = (s.out.device, s.out.dtype, s.out.size)
            if id(s.out) in slot and s.kind is LAUNCH:
                o = slot[id(s.out)]  # a launch writing a buffer it did not make: in place
            if checks and all(p >= 0 for p, _ in checks) and o >= 0:
                donor, o = o, -1  # donated: a fresh output, or the donor at a replay
            if o < 0:
                o, size = size, size + 1
                slot[id(s.out)] = o
        sc = tuple([(where.get(id(n), -1), v) for n, v in zip(s.sources, s.scalars)])
        if len(sc) < len(s.scalars):  # values launched without their nodes: constants
            sc = tuple([(-1, v) for v in s.scalars])
        step = _PlanStep(s.kind, refs, o, s.backend, s.program, meta, s.value, s.label, sc)
        step.kernel = s.kernel
        if donor >= 0:  # the recorded program writes over its input; the plain one is made
            step.donor, step.donor_program, step.program = donor, s.program, None
            step.checks = checks
        elif s.kind is LAUNCH and s.backend is not None and s.program is not None:
            step.direct = s.backend.direct(s.program)
        steps.append(step)
    return Plan(steps, consts, [slot[id(b)] for b in outputs])


def donations(
    plan: Plan, inputs: list[Buffer], pairs: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """For `pairs` (input slot i, plan output k: the new value of input i), the ones whose
    output a replay may write into input i's buffer, as (step position, i): the launch
    making output k is a fresh output whose kernel may overwrite input i
    (`donate.donors`) or does not read it at all (a gradient made anew each step, into a
    buffer of the same size), and no later step or other output reads input i, nor any
    later host read or host step can fail the replay (GuardFailed). Marks those steps
    (their donor program is compiled here); a replay decides per call, from reference
    counts, whether to use them (`Plan.run(donated=...)`)."""
    made_at = {s.out: at for at, s in enumerate(plan.steps) if s.kind is LAUNCH}
    out: list[tuple[int, int]] = []
    for i, k in pairs:
        o = plan.outputs[k]
        at = made_at.get(o)
        if at is None or not donate.ENABLED:
            continue
        s = plan.steps[at]
        if o < len(inputs) + len(plan.consts) or s.kernel is None or s.backend is None:
            continue  # not a fresh buffer of a launch we know the kernel of
        later = plan.steps[at + 1 :]
        if any(i in t.ins or t.out == i for t in later) or plan.outputs.count(i):
            continue
        if any(t.kind is not LAUNCH for t in later):
            continue  # a guard may still fail after it: arguments must be unchanged then
        b = inputs[i]
        if i not in s.ins and s.meta == (b.device, b.dtype, b.size):
            if not any(t.out == i for t in plan.steps[:at]):  # nothing else writes there
                s.donor, s.donor_program = i, s.program
                out.append((at, i))
            continue
        js = [j for j in donate.donors(s.kernel.ast, s.kernel.kind) if s.ins[j] == i]
        if js:
            s.donor = i
            s.donor_program = s.backend.compile(replace(s.kernel, alias=js[0]))
            out.append((at, i))
    return out
