"""A small DLRM trained on batches whose bags change length every step, side by side with
PyTorch: compiles after the first steps (target: none), step time eager and under
`anychip.jit` against PyTorch eager, and the cold first step with an empty kernel cache.
Also a 1000-step loop under CosineAnnealingLR: kernels compiled after step 2 (target: 0).

    PYTHONPATH=src python bench/dlrm.py [--quick] [--steps N] [--repeat N] [--sparse] [--calls]

Model: 3 sparse features (EmbeddingBag sum, 20K x 16 tables, 1-5 ids per sample), 13 dense
features through a 13-64-16 bottom MLP, concatenation, a 64-32-1 top MLP, BCE-with-logits,
SGD; batch 256. As a recommendation data pipeline does, each batch's ids come padded to
their size class (the next power of two) with B+1 offsets (`include_last_offset=True`),
so every peer gets the same tensors and a jitted step replays on every batch.

`--sparse`: both peers' tables are `EmbeddingBag(sparse=True)`, whose gradients are
row-sparse (docs/sparse.md), and SGD moves only the rows a batch touched.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)

import anychip as ac  # noqa: E402
from anychip.frontend.embedding import size_class  # noqa: E402
from anychip.runtime.device import get_backend  # noqa: E402

try:
    import torch
except ImportError:  # the torch column is skipped
    torch = None  # type: ignore[assignment]

TABLES, ROWS, DIM, DENSE, BATCH = 3, 20_000, 16, 13, 256


def batches(n: int, seed: int = 0) -> list[tuple[Any, ...]]:
    """`n` batches of (ids per table, offsets per table, dense, labels) as numpy arrays."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids, offs = [], []
        for _t in range(TABLES):
            lengths = rng.integers(1, 6, BATCH)
            n = int(lengths.sum())
            padded = np.zeros(size_class(n), np.int64)
            padded[:n] = rng.integers(0, ROWS, n)
            ids.append(padded)
            offs.append(np.concatenate([[0], np.cumsum(lengths)]))
        dense = rng.standard_normal((BATCH, DENSE), dtype=np.float32)
        out.append((ids, offs, dense, rng.integers(0, 2, BATCH).astype(np.float32)))
    return out


SPARSE = False  # --sparse: tables with sparse=True (row-sparse gradients) in both peers


def build(lib: Any, dev: str | None = None) -> tuple[Any, Any]:
    nn = lib.nn

    class DLRM(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.ModuleList(
                [
                    nn.EmbeddingBag(ROWS, DIM, mode="sum", include_last_offset=True, sparse=SPARSE)
                    for _ in range(3)
                ]
            )
            self.bottom = nn.Sequential(nn.Linear(DENSE, 64), nn.ReLU(), nn.Linear(64, DIM))
            self.top = nn.Sequential(nn.Linear(DIM * 4, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, ids: Any, offs: Any, dense: Any) -> Any:
            parts = [self.bottom(dense)]
            parts += [e(i, o) for e, i, o in zip(self.emb, ids, offs)]
            return self.top(lib.cat(parts, 1)).reshape(-1)

    model = DLRM()
    if dev is not None:
        model = model.to(dev)
    return model, lib.optim.SGD(model.parameters(), lr=0.05)


def programs(dev: str) -> int:
    return len(getattr(get_backend(dev), "programs", ()))


def ours(
    dev: str, data: list[tuple[Any, ...]], jit: bool, prof: cProfile.Profile | None = None
) -> tuple[list[float], list[int]]:
    """Per-step seconds and the device's compiled-program count after each step; `prof`
    profiles the steps after the third."""
    ac.manual_seed(0)
    model, opt = build(ac, dev)
    bce = ac.nn.functional.binary_cross_entropy_with_logits

    def step(model: Any, opt: Any, ids: Any, offs: Any, dense: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = bce(model(ids, offs, dense), y)
        loss.backward()
        opt.step()
        return loss.realize()

    fn = ac.jit(step) if jit else step
    times, counts = [], []
    for k, (ids, offs, dense, y) in enumerate(data):
        args = (
            [ac.tensor(i, device=dev) for i in ids],
            [ac.tensor(o, device=dev) for o in offs],
            ac.tensor(dense, device=dev),
            ac.tensor(y, device=dev),
        )
        watch = prof if k >= 3 else None
        if watch is not None:
            watch.enable()
        t0 = time.perf_counter()
        fn(model, opt, *args)
        times.append(time.perf_counter() - t0)
        if watch is not None:
            watch.disable()
        counts.append(programs(dev))
    # a replay's kernels may still run when it returns (backends/cpu/stream.py): each
    # step's time holds the wait for the step before, and the last one's is added here
    t0 = time.perf_counter()
    get_backend(dev).synchronize()
    times[-1] += time.perf_counter() - t0
    return times, counts


def python_calls(dev: str, data: list[tuple[Any, ...]]) -> tuple[float, str]:
    """Python function calls per eager step (cProfile's count over steps 4..), steadier on
    a busy machine than a time, and the functions with the most time of their own."""
    prof = cProfile.Profile()
    ours(dev, data, False, prof)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(12)
    calls: int = stats.total_calls  # type: ignore[attr-defined]
    return calls / max(len(data) - 3, 1), out.getvalue()


def theirs(data: list[tuple[Any, ...]]) -> list[float]:
    torch.manual_seed(0)
    model, opt = build(torch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    times = []
    for ids, offs, dense, y in data:
        args = (
            # torch's sparse backward fails on ids past the last offset, and its dense one
            # turns the table to NaN within ~25 steps of them: give it only the bags' ids
            # (torch needs no padding: it compiles nothing per shape)
            [torch.from_numpy(i[: o[-1]]) for i, o in zip(ids, offs)],
            [torch.from_numpy(o) for o in offs],
            torch.from_numpy(dense),
            torch.from_numpy(y),
        )
        t0 = time.perf_counter()
        opt.zero_grad()
        bce(model(*args[:3]), args[3]).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def cosine_loop(dev: str, steps: int) -> int:
    """Kernels compiled after step 2 of a `steps`-step loop under CosineAnnealingLR."""
    model = ac.nn.Sequential(ac.nn.Linear(32, 64), ac.nn.ReLU(), ac.nn.Linear(64, 1)).to(dev)
    opt = ac.optim.Adam(model.parameters(), lr=0.01)
    sched = ac.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps // 4, 1))
    x, y = ac.randn(64, 32, device=dev), ac.randn(64, 1, device=dev)
    after = 0
    for s in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        sched.step()
        if s == 1:
            after = programs(dev)
    model[0].weight.realize()
    return programs(dev) - after


COLD = """
import sys, time; sys.path.insert(0, {src!r}); sys.path.insert(0, {bench!r})
import dlrm
dlrm.SPARSE = {sparse!r}
data = dlrm.batches(1)
t0 = time.perf_counter(); dlrm.ours({dev!r}, data, False); print(time.perf_counter() - t0)
"""


def cold_start(dev: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ANYCHIP_CACHE_DIR": tmp}
        bench = str(Path(__file__).parent)
        code = COLD.format(src=SRC, bench=bench, dev=dev, sparse=SPARSE)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])
        return float(r.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="few steps, a smoke run")
    p.add_argument("--steps", type=int, default=None, help="training steps per run")
    p.add_argument("--repeat", type=int, default=3, help="runs per figure (best of)")
    p.add_argument("--sparse", action="store_true", help="sparse=True tables in both peers")
    p.add_argument(
        "--calls", action="store_true", help="also count Python calls per eager step (cProfile)"
    )
    args = p.parse_args()
    global SPARSE
    SPARSE = args.sparse
    dev = "cpu" if "cpu" in ac.devices() else ac.devices()[0]
    steps = args.steps or (8 if args.quick else 60)
    data = batches(steps)
    best: dict[str, float] = {}
    compiles: dict[str, int] = {}
    # PyTorch at its best thread count: one thread (no pool to wake per op) or all of them
    threads = sorted({1, torch.get_num_threads()}) if torch is not None else []
    torch_sec: dict[int, float] = {}  # thread count -> best per-step figure
    for _ in range(args.repeat):  # interleaved; per-step figure: median of steps 4..
        for name in ("anychip", "anychip_jit", "torch"):
            if name == "torch":
                for n in threads:
                    torch.set_num_threads(n)
                    t = theirs(data)
                    torch_sec[n] = min(torch_sec.get(n, float("inf")), float(np.median(t[3:] or t)))
                continue
            t, counts = ours(dev, data, name == "anychip_jit")
            compiles[name] = counts[-1] - counts[min(2, len(counts) - 1)]
            best[name] = min(best.get(name, float("inf")), float(np.median(t[3:] or t)))
    if torch_sec:
        best["torch"] = min(torch_sec.values())
    grads = "sparse" if SPARSE else "dense"
    print(f"device: {dev}; {steps} steps of batch {BATCH}, bags of 1-5 ids, 3 tables, {grads}")
    if torch_sec:
        tried = ", ".join(f"{n}: {s * 1e3:.2f} ms" for n, s in torch_sec.items())
        print(f"torch per thread count ({tried}); the best is the torch figure")
    for name, sec in best.items():
        ratio = f"  torch/this {best['torch'] / sec:.2f}x" if "torch" in best else ""
        print(f"{name:<12} {sec * 1e3:8.2f} ms/step{ratio}")
    for name, n in compiles.items():
        print(f"{name}: programs compiled after step 3: {n}")
    if args.calls:
        calls, top = python_calls(dev, data)
        print(f"anychip eager: {calls:.0f} Python calls per step (cProfile)\n{top}")
    n = 50 if args.quick else 1000
    print(f"cosine schedule, {n} steps: programs compiled after step 2: {cosine_loop(dev, n)}")
    if not args.quick:
        print(f"cold first step (empty cache): {cold_start(dev):.2f} s")


if __name__ == "__main__":
    main()
