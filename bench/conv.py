"""Convolution and attention forward+backward on device "cpu" against PyTorch CPU, in one
process: a ResNet-style 3x3 conv2d (batch 32, 64->64 channels, 56x56), a 1x1 conv2d on the
same tensors, and causal scaled_dot_product_attention (batch 8, 8 heads, 512 tokens, 64 per
head). Prints best-of-N times, each round running anychip then torch (interleaved, so load
on the machine hits both alike), and the ratio torch/anychip (> 1: anychip is faster); the
convolutions also forward alone. Both use all the cores this process may run on.

Run: PYTHONPATH=src python bench/conv.py [--repeat N] [--only conv3x3|conv1x1|sdpa] [--small]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

import anychip as ac
import anychip.nn.functional as F


def best_ms(fns: Sequence[Callable[[], object]], repeat: int) -> list[float]:
    """Best time of each fn in ms, the fns taking turns within every round."""
    for fn in fns:
        fn()  # compile, warm the dispatch cache
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return [b * 1e3 for b in best]


def conv_case(n: int, c: int, hw: int, k: int, repeat: int) -> list[float]:
    """[ours, torch] forward+backward, then [ours, torch] forward alone (ms)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c, c, k, k), dtype=np.float32) * 0.05
    g = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    ax = ac.tensor(x, device="cpu", requires_grad=True)
    aw = ac.tensor(w, device="cpu", requires_grad=True)
    ag = ac.tensor(g, device="cpu")
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tg = torch.tensor(g)

    def ours() -> None:
        ax.grad = aw.grad = None
        y = F.conv2d(ax, aw, padding=k // 2)
        y.backward(ag)

    def theirs() -> None:
        tx.grad = tw.grad = None
        y = torch.nn.functional.conv2d(tx, tw, padding=k // 2)
        y.backward(tg)

    def ours_fwd() -> None:
        F.conv2d(ax.detach(), aw.detach(), padding=k // 2).realize()

    def theirs_fwd() -> None:
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, padding=k // 2)

    ours()
    theirs()
    assert ax.grad is not None and aw.grad is not None and tw.grad is not None
    for a, t in ((ax.grad, tx.grad), (aw.grad, tw.grad)):
        err = np.abs(a.numpy() - t.numpy()).max() / np.abs(t.numpy()).max()
        assert err < 1e-3, err
    return best_ms([ours, theirs, ours_fwd, theirs_fwd], repeat)


def sdpa_case(b: int, h: int, t: int, d: int, repeat: int) -> list[float]:
    rng = np.random.default_rng(0)
    arrs = [rng.standard_normal((b, h, t, d), dtype=np.float32) for _ in range(4)]
    aq, ak, av = (ac.tensor(a, device="cpu", requires_grad=True) for a in arrs[:3])
    ag = ac.tensor(arrs[3], device="cpu")
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in arrs[:3])
    tg = torch.tensor(arrs[3])

    def ours() -> None:
        aq.grad = ak.grad = av.grad = None
        F.scaled_dot_product_attention(aq, ak, av, is_causal=True).backward(ag)

    def theirs() -> None:
        tq.grad = tk.grad = tv.grad = None
        torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tg)

    return best_ms([ours, theirs], repeat)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", default=None)
    p.add_argument("--small", action="store_true", help="batch 4 (a quick check)")
    args = p.parse_args()
    n = 4 if args.small else 32
    cases: dict[str, Callable[[], list[float]]] = {
        "conv3x3": lambda: conv_case(n, 64, 56, 3, args.repeat),
        "conv1x1": lambda: conv_case(n, 64, 56, 1, args.repeat),
        "sdpa": lambda: sdpa_case(1 if args.small else 8, 8, 512, 64, args.repeat),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, fn in cases.items():
        if args.only and name != args.only:
            continue
        times = fn()
        for what, (ours, theirs) in zip(("fwd+bwd", "fwd"), zip(times[::2], times[1::2])):
            print(
                f"{name:8s} {what:8s} anychip {ours:8.2f} ms  torch {theirs:8.2f} ms  "
                f"ratio {theirs / ours:.2f}x"
            )


if __name__ == "__main__":
    main()
