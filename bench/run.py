"""anychip against numpy and PyTorch on the CPU, in one process and one run: matmul, a fused
chain, softmax, layer norm, embedding_bag, an MLP training step, tiny-op latency (eager and
under anychip.jit) and the cold compile time of a kernel. Prints a table, writes JSON.

Run: PYTHONPATH=src python bench/run.py [--quick] [--only NAME] [--repeat N] [--json PATH]
(`make bench`). Each figure is the best of N rounds that alternate anychip and its peers, so a
noisy neighbour hurts all alike. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from this
process's environment (it re-executes itself) so numpy runs its best kernel.
"""

from __future__ import annotations

import os
import sys

_FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _FORCED):  # before numpy loads OpenBLAS
    env = {k: v for k, v in os.environ.items() if k not in _FORCED}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

SRC = str(Path(__file__).resolve().parent.parent / "src")
if SRC not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, SRC)

import anychip as ac  # noqa: E402

try:
    import torch
except ImportError:  # a peer that is missing is skipped with a note
    torch = None

Fn = Callable[[], object]
NOTES: list[str] = []


def blas_kernel() -> str:
    """Which BLAS library and kernel numpy uses, as threadpoolctl reports it."""
    try:
        import threadpoolctl  # type: ignore[import-not-found]
    except ImportError:
        return "unknown (threadpoolctl is not installed)"
    for info in threadpoolctl.threadpool_info():
        if info.get("user_api") == "blas":
            return (
                f"{info.get('internal_api')} {info.get('version')} "
                f"{info.get('architecture')} ({info.get('num_threads')} threads)"
            )
    return "no BLAS found by threadpoolctl"


def host() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores, {platform.system()} {platform.release()}"


def pick_device() -> str:
    if "cpu" in ac.devices():
        return "cpu"
    dev = ac.devices()[0]
    NOTES.append(f"device 'cpu' is not available here; anychip runs on {dev!r}")
    return dev


IDLE_PAUSE_S = 0.2
WARM_S = 0.03  # seconds of untimed calls before each timed round


def best_of(fns: Mapping[str, Fn], repeat: int, inner: int = 1) -> dict[str, float]:
    """Seconds per call of each fn: best of `repeat` rounds (of `inner` calls), interleaved.
    Each round pauses (the previous peer's spinning threads go idle), then calls fn for
    WARM_S before timing: right after a pause the first calls run on cores still waking
    up (on this VM softmax takes 1.3-1.5x longer), which would measure the wake-up."""
    for fn in fns.values():
        fn()  # warm up: compile, allocate, page in
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            # OpenBLAS's and OpenMP's idle threads spin for a while after a call: let the
            # previous peer's go quiet so they do not steal the cores from this one
            time.sleep(IDLE_PAUSE_S)
            warm_until = time.perf_counter() + WARM_S  # then run hot: the cores woke up
            fn()
            while time.perf_counter() < warm_until:
                fn()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / inner)
    return best


def rand(*shape: int) -> np.ndarray:
    return np.random.default_rng(len(shape) + shape[0]).standard_normal(shape, dtype=np.float32)


def peers(
    ours: dict[str, Fn], np_fn: Fn | None, torch_fn: Callable[[], Fn] | None
) -> dict[str, Fn]:
    fns = dict(ours)
    if np_fn is not None:
        fns["numpy"] = np_fn
    if torch_fn is not None and torch is not None:
        fns["torch"] = torch_fn()
    return fns


# --- the benchmarks: each returns {peer: seconds} -------------------------------------------
def b_matmul(dev: str, n: int, repeat: int) -> dict[str, float]:
    a, b = rand(n, n), rand(n, n)
    x, y = ac.tensor(a, device=dev).realize(), ac.tensor(b, device=dev).realize()

    def tfn() -> Fn:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.mm(ta, tb)

    return best_of(peers({"anychip": lambda: (x @ y).realize()}, lambda: a @ b, tfn), repeat)


def b_chain(dev: str, n: int, repeat: int) -> dict[str, float]:
    a, b, c = rand(n, n), rand(n, n) + 0.5, rand(n, n)
    x, y, z = (ac.tensor(v, device=dev).realize() for v in (a, b, c))

    def tfn() -> Fn:
        ta, tb, tc = (torch.from_numpy(v) for v in (a, b, c))
        return lambda: (ta * tb + tc).relu().sum()

    ours = {"anychip": lambda: (x * y + z).relu().sum().realize()}
    return best_of(peers(ours, lambda: np.maximum(a * b + c, 0).sum(), tfn), repeat)


def _np_softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def b_softmax(dev: str, rows: int, cols: int, repeat: int) -> dict[str, float]:
    a = rand(rows, cols)
    x = ac.tensor(a, device=dev).realize()

    def tfn() -> Fn:
        ta = torch.from_numpy(a)
        return lambda: torch.softmax(ta, dim=1)

    ours = {"anychip": lambda: x.softmax(dim=1).realize()}
    return best_of(peers(ours, lambda: _np_softmax(a), tfn), repeat)


def _np_layer_norm(a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = a.mean(axis=1, keepdims=True)
    var = ((a - mu) ** 2).mean(axis=1, keepdims=True)
    return (a - mu) / np.sqrt(var + 1e-5) * w + b


def b_layer_norm(dev: str, rows: int, cols: int, repeat: int) -> dict[str, float]:
    a, w, b = rand(rows, cols), rand(cols), rand(cols)
    x, wt, bt = (ac.tensor(v, device=dev).realize() for v in (a, w, b))
    ln = ac.nn.functional.layer_norm

    def tfn() -> Fn:
        ta, tw, tbb = (torch.from_numpy(v) for v in (a, w, b))
        return lambda: torch.nn.functional.layer_norm(ta, (cols,), tw, tbb)

    ours = {"anychip": lambda: ln(x, (cols,), wt, bt).realize()}
    return best_of(peers(ours, lambda: _np_layer_norm(a, w, b), tfn), repeat)


def b_embedding_bag(dev: str, rows: int, dim: int, bags: int, repeat: int) -> dict[str, float]:
    bag = 20  # ids per bag; every bag non-empty, so numpy's reduceat is the same sum
    rng = np.random.default_rng(0)
    table = rng.standard_normal((rows, dim), dtype=np.float32)
    ids = rng.integers(0, rows, bags * bag)
    offsets = np.arange(0, bags * bag, bag)
    w, i, o = (ac.tensor(v, device=dev).realize() for v in (table, ids, offsets))
    eb = ac.nn.functional.embedding_bag

    def tfn() -> Fn:
        tt, ti, to = (torch.from_numpy(v) for v in (table, ids, offsets))
        return lambda: torch.nn.functional.embedding_bag(ti, tt, to, mode="sum")

    ours = {"anychip": lambda: eb(i, w, o, mode="sum").realize()}
    return best_of(peers(ours, lambda: np.add.reduceat(table[ids], offsets, axis=0), tfn), repeat)


def b_embedding_bag_grad(dev: str, rows: int, dim: int, bags: int, repeat: int) -> dict[str, float]:
    """embedding_bag forward and backward to a dense table gradient (a training step's
    embedding part): the gradient is the table's size, rows added in from every bag."""
    bag = 20
    rng = np.random.default_rng(1)
    table = rng.standard_normal((rows, dim), dtype=np.float32)
    ids, offsets = rng.integers(0, rows, bags * bag), np.arange(0, bags * bag, bag)
    w = ac.nn.Parameter(ac.tensor(table, device=dev))
    i, o = (ac.tensor(v, device=dev).realize() for v in (ids, offsets))
    eb = ac.nn.functional.embedding_bag

    def ours() -> None:
        w.grad = None
        eb(i, w, o, mode="sum").sum().backward()

    def tfn() -> Fn:
        tw = torch.nn.Parameter(torch.from_numpy(table.copy()))
        ti, to = torch.from_numpy(ids), torch.from_numpy(offsets)

        def step() -> None:
            tw.grad = None
            torch.nn.functional.embedding_bag(ti, tw, to, mode="sum").sum().backward()

        return step

    return best_of(peers({"anychip": ours}, None, tfn), repeat)


def b_mlp(dev: str, batch: int, repeat: int) -> dict[str, float]:
    """784-512-512-10 with SGD (momentum 0.9): forward, cross entropy, backward, step."""
    sizes = (784, 512, 512, 10)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((batch, 784), dtype=np.float32), rng.integers(0, 10, batch)
    nn = ac.nn
    layers: list[Any] = []
    for k, (i, o) in enumerate(itertools.pairwise(sizes)):
        layers += [nn.Linear(i, o)] + ([nn.ReLU()] if k < 2 else [])
    model = nn.Sequential(*layers).to(dev)
    opt = ac.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xt, yt = ac.tensor(x, device=dev).realize(), ac.tensor(y, device=dev).realize()

    def step(model: Any, opt: Any, xb: Any, yb: Any) -> Any:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.realize()

    jstep = ac.jit(step)

    def tfn() -> Fn:
        tl: list[Any] = []
        for k, (i, o) in enumerate(itertools.pairwise(sizes)):
            tl += [torch.nn.Linear(i, o)] + ([torch.nn.ReLU()] if k < 2 else [])
        net = torch.nn.Sequential(*tl)
        topt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def tstep() -> None:
            topt.zero_grad()
            torch.nn.functional.cross_entropy(net(tx), ty).backward()
            topt.step()

        return tstep

    ours = {
        "anychip": lambda: step(model, opt, xt, yt),
        "anychip_jit": lambda: jstep(model, opt, xt, yt),
    }
    r = best_of(peers(ours, None, tfn), repeat)
    if "torch" in r:
        NOTES.append(
            f"mlp_step: torch eager time / anychip's: {r['torch'] / r['anychip']:.2f}x eager, "
            f"{r['torch'] / r['anychip_jit']:.2f}x under anychip.jit"
        )
    return r


def b_tiny(dev: str, repeat: int) -> dict[str, float]:
    """A cached 16-element add: Python dispatch cost, eager and under anychip.jit."""
    a, b = rand(16), rand(16)
    x, y = ac.tensor(a, device=dev).realize(), ac.tensor(b, device=dev).realize()
    add = ac.jit(lambda p, q: p + q)

    def tfn() -> Fn:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: ta + tb

    ours = {"anychip": lambda: (x + y).realize(), "anychip_jit": lambda: add(x, y)}
    add(x, y)
    (step,) = next(iter(add.captures.values())).plan.steps  # the one compiled add
    out = ac.zeros(16, device=dev).realize().node.arg
    ins = [x.node.arg, y.node.arg]
    ours["anychip_launch"] = lambda: step.backend.launch(step.program, out, ins)
    r = best_of(peers(ours, lambda: a + b, tfn), repeat, inner=2000)
    us = {k: v * 1e6 for k, v in r.items()}
    NOTES.append(
        f"tiny: the backend's own launch takes {us['anychip_launch']:.1f} us; Python dispatch "
        f"above it: eager {us['anychip'] - us['anychip_launch']:.1f} us, "
        f"jit {us['anychip_jit'] - us['anychip_launch']:.1f} us"
    )
    return r


_COMPILE_SCRIPT = """
import sys, time
sys.path.insert(0, {src!r})
import numpy as np, anychip as ac
a, b, c = (ac.tensor(np.full((256, 256), v, np.float32), device={dev!r}).realize()
           for v in (1.0, 2.0, 3.0))
t0 = time.perf_counter(); (a * b + c).relu().sum(dim=1).realize(); cold = time.perf_counter() - t0
from anychip.runtime import dispatch, eager_cache
eager_cache.clear_cache()  # the next realise schedules and compiles again, from the disk cache
t0 = time.perf_counter(); (a * b + c).relu().sum(dim=1).realize(); warm = time.perf_counter() - t0
print(cold, warm)
"""


def b_compile(dev: str, repeat: int) -> dict[str, float]:
    """Cold compile of a fused elementwise+reduce kernel in a fresh process with an empty
    ANYCHIP_CACHE_DIR; `anychip_warm` is the same kernel from the disk cache."""
    cold = warm = float("inf")
    for _ in range(max(1, min(repeat, 3))):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "ANYCHIP_CACHE_DIR": tmp}
            code = _COMPILE_SCRIPT.format(src=SRC, dev=dev)
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            c, w = (float(v) for v in out.stdout.split())
            cold, warm = min(cold, c), min(warm, w)
    return {"anychip": cold, "anychip_warm": warm}


def b_conv2d(dev: str, n: int, c: int, hw: int, k: int, repeat: int) -> dict[str, float]:
    """conv2d (k x k, padding k//2, c -> c channels) forward + backward to both grads."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c, c, k, k), dtype=np.float32) * 0.05
    g = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    ax, aw = (ac.tensor(a, device=dev, requires_grad=True) for a in (x, w))
    ag = ac.tensor(g, device=dev).realize()

    def ours() -> None:
        ax.grad = aw.grad = None
        ac.nn.functional.conv2d(ax, aw, padding=k // 2).backward(ag)

    def tfn() -> Fn:
        tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
        tg = torch.tensor(g)

        def step() -> None:
            tx.grad = tw.grad = None
            torch.nn.functional.conv2d(tx, tw, padding=k // 2).backward(tg)

        return step

    return best_of(peers({"anychip": ours}, None, tfn), repeat)


def b_sdpa(dev: str, b: int, h: int, t: int, d: int, repeat: int) -> dict[str, float]:
    """Causal scaled_dot_product_attention forward + backward to q, k and v."""
    rng = np.random.default_rng(0)
    arrs = [rng.standard_normal((b, h, t, d), dtype=np.float32) for _ in range(4)]
    aq, ak, av = (ac.tensor(a, device=dev, requires_grad=True) for a in arrs[:3])
    ag = ac.tensor(arrs[3], device=dev).realize()

    def ours() -> None:
        aq.grad = ak.grad = av.grad = None
        ac.nn.functional.scaled_dot_product_attention(aq, ak, av, is_causal=True).backward(ag)

    def tfn() -> Fn:
        tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in arrs[:3])
        tg = torch.tensor(arrs[3])

        def step() -> None:
            tq.grad = tk.grad = tv.grad = None
            sdpa = torch.nn.functional.scaled_dot_product_attention
            sdpa(tq, tk, tv, is_causal=True).backward(tg)

        return step

    return best_of(peers({"anychip": ours}, None, tfn), repeat)


def suite(quick: bool) -> dict[str, tuple[Callable[..., dict[str, float]], tuple[Any, ...]]]:
    """name -> (benchmark, its size arguments before `dev`... after `dev`)."""
    mm = (64, 128) if quick else (512, 1024, 2048)
    s: dict[str, tuple[Callable[..., dict[str, float]], tuple[Any, ...]]] = {
        f"matmul_{n}": (b_matmul, (n,)) for n in mm
    }
    s["chain"] = (b_chain, (256 if quick else 4096,))
    rows, cols = (64, 128) if quick else (4096, 1024)
    s["softmax"] = (b_softmax, (rows, cols))
    s["layer_norm"] = (b_layer_norm, (rows, cols))
    s["embedding_bag"] = (b_embedding_bag, (1000, 16, 64) if quick else (1_000_000, 64, 4096))
    small = (1000, 16, 64) if quick else (100_000, 64, 4096)
    s["embedding_bag_grad"] = (b_embedding_bag_grad, small)
    s["mlp_step"] = (b_mlp, (32 if quick else 256,))
    s["conv2d_3x3"] = (b_conv2d, (2, 8, 8, 3) if quick else (32, 64, 56, 3))
    s["conv2d_1x1"] = (b_conv2d, (2, 8, 8, 1) if quick else (32, 64, 56, 1))
    s["sdpa"] = (b_sdpa, (1, 2, 32, 16) if quick else (8, 8, 512, 64))
    s["tiny"] = (b_tiny, ())
    s["compile"] = (b_compile, ())
    return s


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'benchmark':<15} {'anychip':>11} {'variant':>11} {'numpy':>11} {'torch':>11} "
        f"{'vs numpy':>9} {'vs torch':>9}"
    ]

    def fmt(t: float | None) -> str:
        if t is None:
            return "-"
        return f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.2f} ms"

    for name, r in results.items():
        ours = r["anychip"]
        variant = r.get("anychip_jit", r.get("anychip_warm"))
        ratio = {p: (f"{r[p] / ours:.2f}x" if p in r else "-") for p in ("numpy", "torch")}
        lines.append(
            f"{name:<15} {fmt(ours):>11} {fmt(variant):>11} {fmt(r.get('numpy')):>11} "
            f"{fmt(r.get('torch')):>11} {ratio['numpy']:>9} {ratio['torch']:>9}"
        )
    lines.append("vs X = X's time / anychip's time (above 1: anychip is faster); variant = ")
    lines.append("anychip under anychip.jit (mlp_step, tiny) or from the disk cache (compile)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--only", default=None, help="run the benchmarks whose name starts so")
    p.add_argument("--repeat", type=int, default=None, help="rounds per figure (best of)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    repeat = args.repeat or (2 if args.quick else 5)
    dev = pick_device()
    if torch is None:
        NOTES.append("PyTorch is not installed: its column is skipped")
    info = {"host": host(), "device": dev, "blas": blas_kernel(), "numpy": np.__version__}
    info["torch"] = torch.__version__ if torch is not None else None
    for k, v in info.items():
        print(f"{k}: {v}")
    results: dict[str, dict[str, float]] = {}
    for name, (fn, sizes) in suite(args.quick).items():
        if args.only and not name.startswith(args.only):
            continue
        results[name] = fn(dev, *sizes, repeat)
        print(f"  {name}: done", flush=True)
    print(table(results))
    for note in NOTES:
        print(f"note: {note}")
    if args.json:
        doc = {**info, "notes": NOTES, "quick": args.quick, "repeat": repeat, "results": results}
        Path(args.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
