"""What the PyTorch habits cost on device "cpu": the stable sigmoid against the plain
1 / (1 + exp(-x)) it replaced and torch.sigmoid (forward, and forward + backward), and a
DataLoader epoch over a TensorDataset against torch.utils.data's.

Run: PYTHONPATH=src python bench/habits.py [--repeat N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.utils.data as tud

import anychip as ac
from anychip.utils.data import DataLoader, TensorDataset


def best_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    fn()  # compile and warm the dispatch cache
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def sigmoid_rows(repeat: int) -> None:
    x = ac.randn(2048, 1024, device="cpu")
    xg = ac.randn(2048, 1024, device="cpu", requires_grad=True)
    tx, txg = torch.randn(2048, 1024), torch.randn(2048, 1024, requires_grad=True)

    def plain_fb() -> Any:
        xg.grad = None  # a fresh gradient each time, not a growing sum
        (1 / (1 + (-xg).exp())).sum().backward()
        return xg.grad

    def stable_fb() -> Any:
        xg.grad = None
        xg.sigmoid().sum().backward()
        return xg.grad

    def torch_fb() -> Any:
        txg.grad = None
        txg.sigmoid().sum().backward()
        return txg.grad

    rows = [
        ("sigmoid 2048x1024", lambda: (1 / (1 + (-x).exp())).realize(),
         lambda: x.sigmoid().realize(), lambda: tx.sigmoid()),
        ("sigmoid fwd+bwd", plain_fb, stable_fb, torch_fb),
    ]  # fmt: skip
    for name, plain, stable, theirs in rows:
        p, s, t = (best_ms(f, repeat) for f in (plain, stable, theirs))
        print(f"{name:20s} plain {p:7.2f} ms  stable {s:7.2f} ms  torch {t:7.2f} ms  "
              f"stable/plain {s / p:4.2f}  torch/stable {t / s:4.2f}")  # fmt: skip


def loader_rows(repeat: int) -> None:
    x, y = torch.randn(20000, 32), torch.randint(0, 10, (20000,))
    ours = DataLoader(TensorDataset(ac.tensor(x.numpy()), ac.tensor(y.numpy())), batch_size=64)
    theirs = tud.DataLoader(tud.TensorDataset(x, y), batch_size=64)

    def epoch_ours() -> None:
        for xb, _ in ours:
            xb.realize()

    def epoch_torch() -> None:
        for _xb, _ in theirs:
            pass

    a, t = best_ms(epoch_ours, repeat), best_ms(epoch_torch, repeat)
    print(
        f"{'DataLoader epoch':20s} anychip {a:7.2f} ms  torch {t:7.2f} ms  "
        f"torch/anychip {t / a:4.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    ac.manual_seed(0)
    sigmoid_rows(args.repeat)
    loader_rows(max(2, args.repeat // 5))


if __name__ == "__main__":
    main()
