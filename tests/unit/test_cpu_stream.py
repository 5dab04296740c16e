"""The cpu stream (backends/cpu/stream.py): a jit replay's launches as one generated C call
on a worker thread. Its argument words against C functions written here, and the
ordering it promises (everything that touches memory waits for the sequence in flight)
against numpy references: reads, eager in-place writes, donated updates, forks."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

import anychip as ac
from anychip.backends.cpu import compiler, stream
from anychip.runtime import donate

pytestmark = [
    pytest.mark.skipif(compiler.find_compiler() is None, reason="no C compiler"),
    pytest.mark.skipif("cpu" not in ac.devices(), reason="no cpu device"),
]

_PUT = r"""
#include <stdint.h>
void put_f(float *o, float v) { o[0] = v; }
void put_d(double *o, double v) { o[0] = v; }
void put_i(int32_t *o, int32_t v) { o[0] = v; }
void put_l(int64_t *o, int64_t v) { o[0] = v; }
void add_i(int64_t *o, const int64_t *a, int64_t v) { o[0] = a[0] + v; }
"""


@pytest.fixture(params=["1", "0"], ids=["async", "kernel_by_kernel"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ANYCHIP_CPU_ASYNC", request.param)
    return str(request.param)


def _fns() -> dict[str, object]:
    lib = compiler.build(_PUT, ["-O1"], "test_cpu_stream")
    p, c = ctypes.c_void_p, ctypes
    types = {
        "put_f": [p, c.c_float],
        "put_d": [p, c.c_double],
        "put_i": [p, c.c_int32],
        "put_l": [p, c.c_int64],
        "add_i": [p, p, c.c_int64],
    }
    out = {}
    for name, t in types.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = None, t
        out[name] = fn
    return out


def test_sequence_passes_every_argument_kind() -> None:
    fns = _fns()
    f32, f64 = np.zeros(1, np.float32), np.zeros(1, np.float64)
    i32, i64, acc = np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, np.int64)
    order = ["put_f", "put_d", "put_i", "put_l", "add_i"]
    seq = stream.sequence([fns[k] for k in order])  # type: ignore[misc]
    assert seq is not None
    assert seq.offsets == [0, 2, 4, 6, 8]
    # the last call reads what the one before it wrote: the calls run in order
    values = [None, -1.25e-3, None, -(2.0**-1074), None, -7, None, -(2**62) - 3, None, None, 11]
    words = seq.layout(values)
    ptrs = [f32, f64, i32, i64, acc, i64]
    at = [0, 2, 4, 6, 8, 9]
    words[at] = [a.ctypes.data for a in ptrs]
    seq.start(words, ptrs)
    stream.wait_all()
    assert f32[0] == np.float32(-1.25e-3)
    assert f64[0] == -(2.0**-1074)  # a subnormal double keeps every bit
    assert i32[0] == -7 and i64[0] == -(2**62) - 3
    assert acc[0] == -(2**62) - 3 + 11


_GATE = r"""
#include <stdint.h>
#include <time.h>
/* o[0] = a[0] + v once gate[0] is set (+ 1000 if it was not within 5 s) */
void gated_add(int64_t *o, const int64_t *a, int64_t v, const volatile int64_t *gate) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int late = 0;
    while (!gate[0]) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 5) { late = 1000; break; }
    }
    o[0] = a[0] + v + late;
}
"""


def test_queued_sequences_run_in_order_without_the_caller_waiting() -> None:
    """A stream holds QUEUE sequences at once: the caller hands over the next one while
    the one before cannot finish (it waits on a gate only the caller opens, so a caller
    that waited would leave it to time out), and they run in the order handed over, each
    reading what the one before wrote."""
    lib = compiler.build(_GATE, ["-O1"], "test_cpu_stream_gate")
    fn = lib.gated_add
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    seq = stream.sequence([fn])
    assert seq is not None
    gate = np.zeros(1, np.int64)
    cells = [np.zeros(1, np.int64) for _ in range(stream.QUEUE + 3)]
    cells[0][0] = 5

    def hand(k: int) -> None:
        words = seq.layout([None, None, 10 * k, None])
        words[[0, 1, 3]] = [cells[k].ctypes.data, cells[k - 1].ctypes.data, gate.ctypes.data]
        seq.start(words, [cells[k], cells[k - 1], gate])

    hand(1)
    hand(2)  # queued behind the first, which waits for the gate: returns all the same
    assert all(int(c[0]) == 0 for c in cells[1:])
    gate[0] = 1
    for k in range(3, len(cells)):
        hand(k)
    stream.wait_all()
    want = [5]
    for k in range(1, len(cells)):
        want.append(want[-1] + 10 * k)
    assert [int(c[0]) for c in cells] == want


def test_sequence_refuses_unknown_argument_types() -> None:
    fn = _fns()["put_f"]
    fn.argtypes = [ctypes.c_void_p, ctypes.c_uint16]  # type: ignore[attr-defined]
    assert stream.sequence([fn]) is None  # type: ignore[list-item]


def _model() -> tuple[ac.nn.Module, ac.optim.Optimizer]:
    ac.manual_seed(3)
    m = ac.nn.Sequential(ac.nn.Linear(5, 8), ac.nn.ReLU(), ac.nn.Linear(8, 1)).to("cpu")
    return m, ac.optim.SGD(m.parameters(), lr=0.1)


def _step(m: ac.nn.Module, opt: ac.optim.Optimizer, x: ac.Tensor, y: ac.Tensor) -> ac.Tensor:
    opt.zero_grad()
    loss = ((m(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    return loss.realize()


def _numpy_step(ws: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> float:
    """The same step in float64 numpy: ws = [w1, b1, w2, b2], updated in place."""
    w1, b1, w2, b2 = ws
    h = x @ w1.T + b1
    r = np.maximum(h, 0)
    out = r @ w2.T + b2
    d = 2 * (out - y) / out.size
    gw2, gb2 = d.T @ r, d.sum(0)
    dr = (d @ w2) * (h > 0)
    gw1, gb1 = dr.T @ x, dr.sum(0)
    for w, g in zip(ws, [gw1, gb1, gw2, gb2], strict=True):
        w -= lr * g
    return float(((out - y) ** 2).mean())


def test_replays_run_as_one_sequence_and_follow_numpy(mode: str) -> None:
    m, opt = _model()
    ws = [p.numpy().astype(np.float64) for p in m.parameters()]
    step = ac.jit(_step)
    rng = np.random.default_rng(0)
    before = 0
    for k in range(40):
        x = rng.standard_normal((16, 5)).astype(np.float32)
        y = rng.standard_normal((16, 1)).astype(np.float32)
        loss = step(m, opt, ac.tensor(x, device="cpu"), ac.tensor(y, device="cpu"))
        want = _numpy_step(ws, x.astype(np.float64), y.astype(np.float64), 0.1)
        if k % 3 == 0:  # read at once (in flight) or a few steps later
            np.testing.assert_allclose(loss.item(), want, rtol=1e-4)
        if k == 3:  # replays from here on update the parameters where they lie
            before = donate.donated_count()
    for p, w in zip(m.parameters(), ws, strict=True):
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-4, atol=1e-5)
    forms = [f for c in step.captures.values() for f in c.plan.replayer.forms.values()]
    assert forms and all((f.sequence is not None) == (mode == "1") for f in forms)
    # donated updates, each while the sequence before it may still have been in flight
    assert donate.donated_count() - before >= 36 * 4


def test_eager_writes_wait_for_the_sequence(mode: str) -> None:
    """An eager in-place update right after a replay must see the replay's result and must
    not land under it: the replay reads and writes the same parameter."""
    m, opt = _model()
    ws = [p.numpy().astype(np.float64) for p in m.parameters()]
    step = ac.jit(_step)
    rng = np.random.default_rng(1)
    for _ in range(12):
        x = rng.standard_normal((16, 5)).astype(np.float32)
        y = rng.standard_normal((16, 1)).astype(np.float32)
        step(m, opt, ac.tensor(x, device="cpu"), ac.tensor(y, device="cpu"))
        _numpy_step(ws, x.astype(np.float64), y.astype(np.float64), 0.1)
        with ac.no_grad():
            for p in m.parameters():
                p.mul_(0.5)
        for w in ws:
            w *= 0.5
    for p, w in zip(m.parameters(), ws, strict=True):
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-4, atol=1e-5)


def test_eager_plans_run_as_sequences_with_new_scalars_each_run(mode: str) -> None:
    """Eager steps (no jit): the eager cache's plans become sequences once they repeat
    (replay.eager_run), each run with this step's learning rate as a runtime scalar and
    donated parameter updates; reads at once, a few steps later, and an eager in-place
    write between steps all see float64 numpy's values."""
    from anychip.runtime import eager_cache

    eager_cache.clear_cache()
    m, opt = _model()
    ws = [p.numpy().astype(np.float64) for p in m.parameters()]
    rng = np.random.default_rng(2)
    before = donate.donated_count()
    for k in range(30):
        # new values each step: the learning rate, and a loss scale that the backward's
        # plan takes as a runtime scalar
        lr, scale = 0.1 / (1 + k), 1.0 + k / 8
        opt.param_groups[0]["lr"] = lr
        x = rng.standard_normal((16, 5)).astype(np.float32)
        y = rng.standard_normal((16, 1)).astype(np.float32)
        opt.zero_grad()
        loss = ((m(ac.tensor(x, device="cpu")) - ac.tensor(y, device="cpu")) ** 2).mean() * scale
        loss.backward()
        opt.step()
        want = scale * _numpy_step(ws, x.astype(np.float64), y.astype(np.float64), lr * scale)
        if k % 4 == 0:
            np.testing.assert_allclose(loss.item(), want, rtol=1e-4)
        if k % 7 == 3:
            with ac.no_grad():
                m[0].weight.mul_(0.5)
            ws[0] *= 0.5
    for p, w in zip(m.parameters(), ws, strict=True):
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-4, atol=1e-5)
    states = [e.plan.eager for e in eager_cache._CACHE.values() if e.plan.eager is not None]
    forms = [f for st in states for f in st.forms.values() if f is not None]
    assert (len(forms) >= 2) == (mode == "1")  # the backward's plan and the update's
    assert donate.donated_count() - before >= 20 * 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_replays_on_a_stream_of_its_own() -> None:
    m, opt = _model()
    step = ac.jit(_step)
    x, y = ac.ones(16, 5, device="cpu"), ac.zeros(16, 1, device="cpu")
    for _ in range(3):
        step(m, opt, x, y)  # the last one may be in flight at the fork
    pid = os.fork()
    if pid == 0:  # the child: replay, read, exit with whether it matched
        try:
            ws = [p.numpy().astype(np.float64) for p in m.parameters()]
            want = _numpy_step(ws, np.ones((16, 5)), np.zeros((16, 1)), 0.1)
            got = step(m, opt, x, y).item()
            os._exit(0 if abs(got - want) <= 1e-4 * max(abs(want), 1) else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    step(m, opt, x, y).item()  # the parent's stream still works


def _slow(w: ac.Tensor, b: ac.Tensor) -> ac.Tensor:
    """A few milliseconds of kernels: long enough that Python reaches its next use of the
    memory while they run."""
    c = w
    for _ in range(6):
        c = (c @ b) * 0.05
    w.add_(c)
    return c.sum(1)


def _slow_ref(w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_slow` in float64 numpy: (w after the call, c; the call returns c.sum(1))."""
    c = w
    for _ in range(6):
        c = (c @ b) * 0.05
    return w + c, c


def test_uses_right_after_a_long_replay_wait_for_it(mode: str) -> None:
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((256, 256)).astype(np.float32)
    b = rng.standard_normal((256, 256)).astype(np.float32)
    w, bt = ac.tensor(w0, device="cpu"), ac.tensor(b, device="cpu")
    f = ac.jit(_slow)
    ref = w0.astype(np.float64)
    for k in range(6):
        ref, c = _slow_ref(ref, b)
        out = f(w, bt)
        if k % 2:  # a read of the result at once
            np.testing.assert_allclose(out.numpy(), c.sum(1), rtol=2e-3, atol=1e-3)
        else:  # an eager in-place write to what the replay updates, at once
            with ac.no_grad():
                w.mul_(0.5)
            ref = ref * 0.5
    np.testing.assert_allclose(w.numpy(), ref, rtol=2e-3, atol=1e-3)


def test_threads_reading_right_after_their_replays(mode: str) -> None:
    """Threads take turns on the one stream: each reads its own result at once, while
    another thread may be the one waiting for the sequence in flight."""
    import threading

    f = ac.jit(_slow)
    rng = np.random.default_rng(4)
    b = rng.standard_normal((256, 256)).astype(np.float32)
    errors: list[str] = []

    def work(seed: int) -> None:
        w0 = np.random.default_rng(seed).standard_normal((256, 256)).astype(np.float32)
        w, bt = ac.tensor(w0, device="cpu"), ac.tensor(b, device="cpu")
        ref = w0.astype(np.float64)
        for _ in range(4):
            ref, c = _slow_ref(ref, b)
            if not np.allclose(f(w, bt).numpy(), c.sum(1), rtol=2e-3, atol=1e-3):
                errors.append(f"thread {seed}: wrong result")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _long(x: ac.Tensor) -> ac.Tensor:
    """A sequence of about a second here: 200 sums over x, with little memory between."""
    s = x[:1] * 0
    for i in range(200):
        s = s + (x + i / 64).exp().sum()
    return s


@pytest.mark.skipif(not hasattr(os, "kill"), reason="no signals")
def test_ctrl_c_while_waiting_for_a_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a wait raises KeyboardInterrupt while the sequence is still running;
    it runs on to its end, and the next read waits for it and sees the whole result."""
    import signal
    import threading

    monkeypatch.setenv("ANYCHIP_CPU_ASYNC", "1")
    monkeypatch.setenv("ANYCHIP_CHUNK_WORK", str(1 << 40))  # whole kernels: all in the sequence
    x0 = np.random.default_rng(6).random(1 << 23, np.float32)
    x = ac.tensor(x0, device="cpu")
    f = ac.jit(_long)
    f(x).numpy()  # the capture
    out = f(x)  # a replay: the sequence now runs on the worker
    assert stream.mine().busy is not None
    timer = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        stream.wait_all()
        pytest.fail("the sequence ended before the signal: make it longer")
    timer.join()
    running = not stream._Lib.get().anychip_stream_wait_for(stream.mine().handle, 0)
    assert running and stream.mine().busy is not None  # interrupted mid-sequence
    total = np.exp(x0.astype(np.float64)).sum()
    want = sum(total * np.exp(i / 64) for i in range(200))
    np.testing.assert_allclose(out.numpy(), [want], rtol=1e-5)


def test_at_once_replays_kernel_by_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """`replay.at_once()` (a server reading each result at once): the replay has run when
    the call returns, nothing is left in flight; outside it the same capture runs on."""
    from anychip.runtime.replay import at_once

    monkeypatch.setenv("ANYCHIP_CPU_ASYNC", "1")
    monkeypatch.setenv("ANYCHIP_CHUNK_WORK", str(1 << 40))
    x0 = np.random.default_rng(8).random(1 << 20, np.float32)
    x = ac.tensor(x0, device="cpu")
    f = ac.jit(_long)
    want = [np.exp(x0.astype(np.float64)).sum() * sum(np.exp(i / 64) for i in range(200))]
    np.testing.assert_allclose(f(x).numpy(), want, rtol=1e-5)  # the capture
    with at_once():
        out = f(x)
        assert stream.mine().busy is None
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5)
    out = f(x)
    assert stream.mine().busy is not None  # runs on again outside
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5)


def _slow_twice(w: ac.Tensor, b: ac.Tensor) -> ac.Tensor:
    """`_slow` as another function (another capture, another plan)."""
    return _slow(w, b)


def test_threads_have_streams_of_their_own_and_share_buffers_in_order(mode: str) -> None:
    """Each thread replays on its own stream; a sequence that updates a buffer another
    thread's sequence in flight updates starts after it (here: two functions, two
    captures, one weight, the second thread starting as soon as the first returns)."""
    import threading

    rng = np.random.default_rng(9)
    w0 = rng.standard_normal((256, 256)).astype(np.float32)
    b = rng.standard_normal((256, 256)).astype(np.float32)
    w, bt = ac.tensor(w0, device="cpu"), ac.tensor(b, device="cpu")
    f, g = ac.jit(_slow), ac.jit(_slow_twice)
    f(w, bt), g(w, bt)  # the captures
    ref = w0.astype(np.float64)
    for _ in range(2):
        ref, _ = _slow_ref(ref, b)
    streams: dict[str, object] = {}
    errors: list[BaseException] = []
    returned, finished = threading.Event(), threading.Event()

    def first() -> None:
        try:
            for _ in range(3):
                f(w, bt)
            streams["first"] = stream.mine()
        except BaseException as e:  # reported below
            errors.append(e)
        finally:
            returned.set()
        finished.wait()  # alive (holding its stream) until the second has run

    def second() -> None:
        try:
            returned.wait()
            for _ in range(3):
                g(w, bt)
            streams["second"] = stream.mine()
        except BaseException as e:
            errors.append(e)
        finally:
            finished.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for _ in range(6):
        ref, _ = _slow_ref(ref, b)
    np.testing.assert_allclose(w.numpy(), ref, rtol=2e-3, atol=1e-3)
    assert streams["first"] is not streams["second"]


def _ids(x: ac.Tensor, base: ac.Tensor) -> ac.Tensor:
    """`base`, made only once a few hundred milliseconds of sums over x have run."""
    s = x[:1] * 0
    for i in range(100):
        s = s + (x + i / 64).exp().sum()
    return base + (s < 0).to(ac.int64)  # s > 0: base itself, but not before s is known


def _bags(table: ac.Tensor, ids: ac.Tensor, offsets: ac.Tensor) -> ac.Tensor:
    return ac.nn.functional.embedding_bag(ids, table, offsets, mode="sum")


def test_a_replayed_host_step_waits_for_the_sequence_writing_its_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bag layout of a replay reads its ids where they lie (Backend.host_address): ids
    that another thread's sequence in flight is still writing must be waited for. (The
    ids' buffer is first given the valid ids of a dropped tensor of the same size, so a
    read too early gives a wrong answer rather than a refusal.)"""
    import threading

    monkeypatch.setenv("ANYCHIP_CPU_ASYNC", "1")
    monkeypatch.setenv("ANYCHIP_CHUNK_WORK", str(1 << 40))
    rng = np.random.default_rng(10)
    x = ac.tensor(rng.random(1 << 23, np.float32), device="cpu")
    table0 = rng.standard_normal((50, 4)).astype(np.float32)
    table = ac.tensor(table0, device="cpu")
    offsets = ac.tensor(np.array([0, 3, 5], np.int64), device="cpu")
    g, h = ac.jit(_ids), ac.jit(_bags)
    for _ in range(2):  # the captures and first replays, in order
        h(table, g(x, ac.tensor(np.arange(8), device="cpu")), offsets).numpy()
    got: list[np.ndarray] = []
    todo: list[ac.Tensor] = []
    ready, done = threading.Event(), threading.Event()

    def scorer() -> None:  # another thread, so another stream: only the ids tell
        while True:
            ready.wait()
            ready.clear()
            if not todo:
                return
            got.append(h(table, todo.pop(), offsets).numpy())
            done.set()

    t = threading.Thread(target=scorer)
    t.start()
    try:
        for k in range(4):
            base0 = rng.integers(0, 50, 8).astype(np.int64)
            base = ac.tensor(base0, device="cpu")
            stale = ac.tensor(np.full(8, 49 - k, np.int64), device="cpu")
            del stale  # its block goes back to the pool: g's output takes it
            todo.append(g(x, base))
            ready.set()
            done.wait()
            done.clear()
            want = [table0[base0[a:b]].sum(0) for a, b in [(0, 3), (3, 5), (5, 8)]]
            np.testing.assert_allclose(got[-1], want, rtol=1e-5, atol=1e-6, err_msg=f"{k}")
    finally:
        todo.clear()
        ready.set()
        t.join()
