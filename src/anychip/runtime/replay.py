"""The fast replay of a jit plan: intermediates live in buffers the plan owns and reuses, so
each launch's arguments are prepared once and a replay is a tight loop of direct calls.

`Plan.run` uses it when nothing watches or records the launches (no profiler, no
ANYCHIP_DEBUG, no enclosing capture) and the plan's runtime scalars are its own
(`anychip.jit`); otherwise the general step-by-step replay runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from anychip.runtime import donate
from anychip.runtime.device import Buffer, get_backend

if TYPE_CHECKING:
    from anychip.ir.ops import Node
    from anychip.runtime.dispatch import Plan, _PlanStep

# bytes of intermediates a plan may keep between replays; a bigger plan (a large batch's
# activations) replays step by step into new buffers, freed after each replay
OWN_LIMIT = 256 << 20

FORMS_KEPT = 8  # replays prepared per plan, one per set of donating steps seen

# one operation of a replay: a direct call (fn, its argument list), or a step run through
# `dispatch` (a chunked launch, a host step or host read), given the environment of buffers
Call = tuple[Callable[..., None], list[Any]]
Slow = Callable[[list[Buffer]], None]


class Replayer:
    """A plan's fast replay. Env slots (as in `Plan`): inputs, constants, then the fresh
    buffers; a fresh buffer that the plan returns is allocated at each replay (it escapes),
    the others are made once and rewritten by each replay (their values never escape).

    One replay at a time uses the own buffers (a lock, tried without waiting): a second
    thread replaying the same plan at once, or a replay inside a replay's host step, gets
    None from `run` and goes the general way, as does every replay of a plan whose
    intermediates would hold more than OWN_LIMIT bytes."""

    def __init__(self, plan: Plan, n_inputs: int) -> None:
        self.plan, self.n_inputs = plan, n_inputs
        self.lock = threading.Lock()
        base = n_inputs + len(plan.consts)
        fresh = sorted({s.out for s in plan.steps if s.out >= base})  # base, base + 1, ...
        self.escaping = sorted({o for o in plan.outputs if o >= base})
        self.env: list[Any] = [None] * n_inputs + list(plan.consts) + [None] * len(fresh)
        self.metas = {s.out: s.meta for s in plan.steps if s.out >= base}
        kept = [o for o in fresh if o not in self.escaping]
        self.fits = sum(self.metas[o][2] * self.metas[o][1].itemsize for o in kept) <= OWN_LIMIT
        for o in kept if self.fits else ():
            dev, dt, size = self.metas[o]
            self.env[o] = Buffer(dev, dt, size, get_backend(dev).allocate(size, dt))
        self.forms: dict[frozenset[int], _Form] = {}
        self.pending: Any = None  # what the last sequence's start returned (its `wait`)

    def run(self, inputs: list[Buffer], donated: frozenset[int]) -> list[Buffer] | None:
        """The plan's outputs replayed on `inputs` (None when the own buffers are busy)."""
        if not self.fits or not self.lock.acquire(blocking=False):
            return None
        try:
            form = self.forms.get(donated) or self._build(donated)
            seq = form.sequence if not getattr(_LOCAL, "at_once", False) else None
            if self.pending is not None:  # the own buffers' last replay may still run
                self.pending.wait()
                self.pending = None
            env = self.env.copy()
            env[: self.n_inputs] = inputs
            for o in form.fresh:
                dev, dt, size = self.metas[o]
                env[o] = Buffer(dev, dt, size, get_backend(dev).allocate(size, dt))
            for o, donor in form.aliases:
                env[o] = env[donor]
            if form.aliases:
                donate.count(len(form.aliases))
            if seq is not None:
                for op in form.ops[: form.lead]:  # the host steps before the launches
                    op(env)  # type: ignore[operator]
                words = form.words
                words[form.at] = [env[i].handle.ptr for i in form.slots]
                # the replayer (its own buffers, the constants) and this run's buffers
                self.pending = seq.start(words, [self, *[env[i].handle for i in form.kept]])
                return [env[i] for i in self.plan.outputs]
            for args, pos, slot in form.patches:
                args[pos] = env[slot].handle.ptr
            for op in form.ops:
                if type(op) is tuple:
                    op[0](*op[1])
                else:
                    op(env)  # type: ignore[operator]
            return [env[i] for i in self.plan.outputs]
        finally:
            self.lock.release()

    def _build(self, donated: frozenset[int]) -> _Form:
        """The replay with the steps at `donated` writing into their donor input."""
        from anychip.runtime import dispatch

        steps = self.plan.steps
        aliases = [(steps[at].out, steps[at].donor) for at in sorted(donated)]
        fresh = [o for o in self.escaping if o not in {a for a, _ in aliases}]
        dynamic = set(range(self.n_inputs)) | set(self.escaping)
        form = _Form([], [], fresh, aliases)
        backends = set()
        for at, s in enumerate(steps):
            backend, program, out = s.backend, s.program, s.out
            if at in donated:
                program, out = s.donor_program, s.donor
            fn = backend.direct(program) if backend is not None and program else None
            if s.kind is not dispatch.LAUNCH or fn is None:
                form.ops.append(_slow(at, s, donated))
                continue
            slots = (out, *s.ins)
            args: list[Any] = [None if i in dynamic else self.env[i].handle.ptr for i in slots]
            args += [v for _, v in s.scalars]
            form.patches += [(args, k, i) for k, i in enumerate(slots) if i in dynamic]
            form.ops.append((fn, args))
            backends.add(backend)
        if len(backends) == 1:
            self._sequence(form, backends.pop(), dynamic)
        if len(self.forms) >= FORMS_KEPT:  # donation patterns that keep changing
            self.forms.clear()
        self.forms[donated] = form
        return form

    @staticmethod
    def _sequence(form: _Form, backend: Any, dynamic: set[int]) -> None:
        """Run `form`'s launches as one sequence of `backend` (Backend.sequence) when they
        all follow its host steps: the form keeps those steps and the sequence's argument
        words, with the word positions (`at`) taking a per-replay buffer's address."""
        lead = 0
        while lead < len(form.ops) and type(form.ops[lead]) is not tuple:
            lead += 1
        calls = form.ops[lead:]
        if len(calls) < 2 or any(type(op) is not tuple for op in calls):
            return
        seq = backend.sequence([fn for fn, _ in calls])  # type: ignore[misc]
        if seq is None:
            return
        where = {id(args): seq.offsets[k] for k, (_, args) in enumerate(calls)}  # type: ignore[misc]
        form.words = seq.layout([v for _, args in calls for v in args])  # type: ignore[misc]
        form.at = np.array([where[id(args)] + pos for args, pos, _ in form.patches], np.intp)
        form.slots = [slot for _, _, slot in form.patches]
        form.kept = sorted(dynamic)
        form.lead, form.sequence = lead, seq


_LOCAL = threading.local()  # .at_once: this thread's replays call kernel by kernel


class at_once:
    """Within it, this thread's replays (jit plans, eager plans seen twice) run their
    kernels one by one before returning, never as a sequence that runs on after the call
    (Backend.sequence). For callers that
    read every result at once (a server scoring a batch): the overlap gains them nothing,
    and the handing over costs a second core's time.

    >>> with at_once():
    ...     pass
    """

    def __enter__(self) -> None:
        self.before = getattr(_LOCAL, "at_once", False)
        _LOCAL.at_once = True

    def __exit__(self, *exc: object) -> None:
        _LOCAL.at_once = self.before


@dataclass
class _Form:
    """A replay's operations for one set of donating steps: `patches` are the argument
    positions that take a per-replay buffer's address (args, position, env slot), `fresh`
    the slots allocated per replay, `aliases` (slot, donor slot) the donated outputs."""

    ops: list[Call | Slow]
    patches: list[tuple[list[Any], int, int]]
    fresh: list[int]
    aliases: list[tuple[int, int]]
    # the launches as one Backend.sequence, after the first `lead` ops (host steps)
    sequence: Any = None
    lead: int = 0
    words: Any = None  # the sequence's argument words
    at: Any = None  # positions in `words` of the per-replay addresses, from env `slots`
    slots: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # per-replay env slots a run keeps


def _slow(at: int, s: _PlanStep, donated: frozenset[int]) -> Slow:
    """A step run through the general launch or host step, on the replay's environment."""
    from anychip.runtime import dispatch

    if s.kind is not dispatch.LAUNCH:  # a host step writes into its slot's buffer

        def host(env: list[Buffer]) -> None:
            dispatch.host_step(s, env, env[s.out] if s.out >= 0 else None)

        return host
    program, out = (s.donor_program, s.donor) if at in donated else (s.program, s.out)
    scalars = tuple([v for _, v in s.scalars])

    def launch(env: list[Buffer]) -> None:
        ins = [env[i] for i in s.ins]
        assert s.backend is not None
        dispatch.launch(s.backend, program, env[out], ins, s.label, (), scalars, s.kernel)

    return launch


# --- eager plans as sequences -------------------------------------------------------------
EAGER_AFTER = 2  # an eager plan's runs before its launches become a sequence (it repeats)


class EagerSequences:
    """An eager cache plan's launches as one `Backend.sequence` (see `eager_run`): the
    forms made so far, one per set of donating steps, and the runs counted until then."""

    __slots__ = ("checked", "donors", "forms", "runs")

    def __init__(self, plan: Plan) -> None:
        self.runs = 0
        self.forms: dict[frozenset[int], _EagerForm | None] = {}
        # the steps that may donate: with checks (eager), with a donor (chosen by a caller)
        self.checked = [at for at, s in enumerate(plan.steps) if s.checks]
        self.donors = [at for at, s in enumerate(plan.steps) if s.donor >= 0]


@dataclass
class _EagerForm:
    """One donation pattern's sequence: the argument words with the per-run addresses at
    `at` (from env `slots`) and, per C type of runtime scalar, the words' positions and
    each scalar's walk position (or -1 and the captured value) in `scalars`; `fresh` the
    env slots allocated per run, `aliases` (slot, donor slot) the donated outputs."""

    sequence: Any
    words: np.ndarray
    at: np.ndarray
    slots: np.ndarray
    scalars: list[tuple[Any, np.ndarray, list[tuple[int, Any]]]]
    fresh: list[tuple[int, tuple[str, Any, int]]]
    aliases: list[tuple[int, int]]
    size: int  # env slots
    allocate: Any  # the backend's allocate


def eager_run(
    plan: Plan, inputs: list[Buffer], nodes: list[Node], donated: frozenset[int] = frozenset()
) -> list[Buffer] | None:
    """Run an eager cache plan's launches as one sequence of their backend, which may still
    be running when this returns: each output buffer remembers the stream, and every later
    use of it waits (backends/cpu/stream.py). None (nothing run) where the plan does not
    qualify: a plan seen fewer than EAGER_AFTER times, steps other than launches into
    fresh buffers of one backend, a chunked kernel, a donor that is not an input, a backend
    without sequences, or a thread inside `at_once`."""
    state = plan.eager
    if state is None:
        state = plan.eager = EagerSequences(plan)
    if state.runs < EAGER_AFTER:
        state.runs += 1
        return None
    if getattr(_LOCAL, "at_once", False):
        return None
    env: list[Any] = [*inputs]
    steps = plan.steps
    # the donating steps: those the caller chose, and those whose checks pass now
    key = frozenset(
        at
        for at in (state.donors if donated else state.checked)
        if steps[at].donor < len(env)
        and (
            at in donated
            or (steps[at].checks and donate.clear(nodes, steps[at].checks, env[steps[at].donor]))
        )
    )
    if key in state.forms:
        form = state.forms[key]
    else:
        form = state.forms[key] = _eager_form(plan, len(inputs), key)
    if form is None:
        return None
    env += [None] * (form.size - len(env))
    allocate = form.allocate
    for slot, (dev, dt, size) in form.fresh:
        env[slot] = Buffer(dev, dt, size, allocate(size, dt))
    for slot, donor in form.aliases:
        env[slot] = env[donor]
    words = form.words.copy()  # a run still in flight reads its own
    # each buffer's address once (kernels share buffers), spread to its words by numpy
    words[form.at] = np.array([b.handle.ptr for b in env], np.uint64)[form.slots]
    for kind, at, values in form.scalars:
        got = [v if p < 0 else nodes[p].arg for p, v in values]
        words[at] = np.array(got, kind).view(_BITS[kind])
    form.sequence.start(words, [form, *[b.handle for b in env]])
    if form.aliases:
        donate.count(len(form.aliases))
    return [env[i] for i in plan.outputs]


_BITS = {np.float32: np.uint32, np.float64: np.uint64, np.int64: np.uint64}


def _eager_form(plan: Plan, n_inputs: int, donated: frozenset[int]) -> _EagerForm | None:
    """The sequence of `plan`'s launches with the steps at `donated` writing into their
    donor input, or None where the plan does not qualify (see `eager_run`)."""
    import ctypes

    from anychip.runtime import dispatch

    if plan.consts or len(plan.steps) < 2:
        return None
    backends = {s.backend for s in plan.steps}
    backend = backends.pop() if len(backends) == 1 else None
    if backend is None or not hasattr(backend, "sequence"):
        return None
    fns: list[Any] = []
    flat: list[Any] = []  # the argument words' values (None: filled per run)
    patches: list[tuple[int, int]] = []  # (word, env slot) of each per-run address
    fresh: list[tuple[int, tuple[str, Any, int]]] = []
    aliases: list[tuple[int, int]] = []
    scalar: dict[Any, tuple[list[int], list[tuple[int, Any]]]] = {}
    kinds: dict[Any, Any] = {ctypes.c_float: np.float32, ctypes.c_double: np.float64}
    outs = set()
    for at, s in enumerate(plan.steps):
        if s.kind is not dispatch.LAUNCH or s.out < n_inputs or s.out in outs:
            return None
        outs.add(s.out)
        if at in donated:
            program, slot = s.donor_program, s.donor
            aliases.append((s.out, s.donor))
        else:
            program, slot = s.program, s.out
            if program is None:  # an eager donating step that cannot donate now
                program = s.program = backend.compile(replace(s.kernel, alias=None))
            fresh.append((s.out, s.meta))
        fn = backend.direct(program) if program is not None else None
        types = getattr(fn, "argtypes", None) or ()
        if fn is None or len(types) != 1 + len(s.ins) + len(s.scalars):
            return None
        base = len(flat)
        for k, i in enumerate((slot, *s.ins)):
            patches.append((base + k, i))
        flat += [None] * (1 + len(s.ins))
        for k, (p, v) in enumerate(s.scalars):
            kind = kinds.get(types[1 + len(s.ins) + k], np.int64)
            pos, values = scalar.setdefault(kind, ([], []))
            pos.append(len(flat))
            values.append((p, v))
            flat.append(None)
        fns.append(fn)
    seq = backend.sequence(fns)
    if seq is None:
        return None
    words = seq.layout(flat)
    return _EagerForm(
        seq,
        words,
        np.array([w for w, _ in patches], np.intp),
        np.array([i for _, i in patches], np.intp),
        [(kind, np.array(pos, np.intp), values) for kind, (pos, values) in scalar.items()],
        fresh,
        aliases,
        max(outs | {n_inputs - 1}) + 1,
        backend.allocate,
    )
