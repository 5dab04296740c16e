"""scaled_dot_product_attention on device "cpu" against PyTorch CPU, in one process: forward
alone and forward + backward to q, k and v, causal and not (batch 8, 8 heads, 512 tokens, 64
per head by default). Rounds alternate anychip and torch (a noisy neighbour hurts both); each
figure is the best of N. Prints the ratio torch/anychip (> 1: anychip is faster).

Run: PYTHONPATH=src python bench/sdpa.py [--repeat N] [--shape B H T D] [--only NAME]
[--cpu-time] (under `taskset -c 0` both run on one core)
(NAME: fwd, fwd+bwd, fwd-full, fwd+bwd-full; `-full` is not causal). ANYCHIP_DEBUG=1 lists
each kernel anychip launches with its time.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch

import anychip as ac
import anychip.nn.functional as F

Fn = Callable[[], object]
IDLE_PAUSE_S = 0.2  # let the other peer's spinning threads go idle before a round


def best_ms(fns: dict[str, Fn], repeat: int, clock: Callable[[], float]) -> dict[str, float]:
    """Best of `repeat` rounds per fn in ms, the fns interleaved within each round."""
    for fn in fns.values():
        fn()  # compile, warm the dispatch cache and the memory pool
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            time.sleep(IDLE_PAUSE_S)
            t = clock()
            fn()
            best[name] = min(best[name], clock() - t)
    return {k: v * 1e3 for k, v in best.items()}


def case(shape: tuple[int, int, int, int], causal: bool, backward: bool) -> dict[str, Fn]:
    """anychip's and torch's step for one configuration, checked against each other first."""
    rng = np.random.default_rng(0)
    arrs = [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]
    aq, ak, av = (ac.tensor(a, device="cpu", requires_grad=backward) for a in arrs[:3])
    ag = ac.tensor(arrs[3], device="cpu").realize()
    tq, tk, tv = (torch.tensor(a, requires_grad=backward) for a in arrs[:3])
    tg = torch.tensor(arrs[3])
    tsdpa = torch.nn.functional.scaled_dot_product_attention

    def ours() -> object:
        if not backward:
            return F.scaled_dot_product_attention(aq, ak, av, is_causal=causal).realize()
        aq.grad = ak.grad = av.grad = None
        F.scaled_dot_product_attention(aq, ak, av, is_causal=causal).backward(ag)
        return aq.grad

    def theirs() -> object:
        if not backward:
            with torch.no_grad():
                return tsdpa(tq, tk, tv, is_causal=causal)
        tq.grad = tk.grad = tv.grad = None
        tsdpa(tq, tk, tv, is_causal=causal).backward(tg)
        return tq.grad

    a, t = ours(), theirs()
    a_np = a.numpy() if isinstance(a, ac.Tensor) else None
    assert a_np is not None and isinstance(t, torch.Tensor)
    err = np.abs(a_np - t.detach().numpy()).max() / np.abs(t.detach().numpy()).max()
    assert err < 1e-4, f"anychip and torch differ: {err}"
    return {"anychip": ours, "torch": theirs}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--shape", type=int, nargs=4, default=(8, 8, 512, 64), metavar="N")
    p.add_argument("--only", default=None)
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by this process's CPU time (all threads) instead of the wall clock: on a "
        "machine other jobs share, the work done rather than the waits for a core",
    )
    args = p.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    shape = tuple(args.shape)
    # both use every core this process may run on (`taskset -c 0 ...` for one)
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    print(
        f"torch {torch.__version__}, {threads} threads each; shape (B, H, T, D) = {shape}; "
        f"best of {args.repeat}, {'CPU time' if args.cpu_time else 'wall clock'}"
    )
    for name, causal, backward in (
        ("fwd", True, False),
        ("fwd+bwd", True, True),
        ("fwd-full", False, False),
        ("fwd+bwd-full", False, True),
    ):
        if args.only and name != args.only:
            continue
        ms = best_ms(case(shape, causal, backward), args.repeat, clock)  # type: ignore[arg-type]
        print(
            f"{name:13s} anychip {ms['anychip']:8.2f} ms  torch {ms['torch']:8.2f} ms  "
            f"ratio {ms['torch'] / ms['anychip']:.2f}x"
        )


if __name__ == "__main__":
    main()
