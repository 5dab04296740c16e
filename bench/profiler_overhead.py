"""What the profiler's launch hook costs (docs/profiler.md): eager small ops with the hook
idle, against the launch door without any hook (the code before the profiler, swapped in
for the measurement) and against the same ops inside `anychip.profile()`.

Run: OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python bench/profiler_overhead.py [--device cpu]
     [--ops 2000] [--repeat 7]

The three variants alternate round by round (machines here are shared); each figure is the
best round. Eager `x + 1.0` on 1024 floats replays a cached plan: the cheapest launch path,
where a per-launch cost shows most.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import anychip as ac
from anychip.runtime import dispatch

HOOKED = dispatch.launch


def unhooked(
    backend: Any,
    program: Any,
    out: Any,
    ins: Any,
    label: str = "",
    sources: Any = (),
    scalars: Any = None,
    kernel: Any = None,
) -> None:
    """The launch door as it was before the profiler: run, then tell the recorders."""
    if scalars is None:
        scalars = tuple([n.arg for n in sources])
    dispatch._run(backend, program, out, ins, scalars)
    for rec in getattr(dispatch._LOCAL, "recorders", ()):
        rec.steps.append(
            dispatch.Step(
                dispatch.LAUNCH, ins, out, backend, program, b"", label, scalars, sources, kernel
            )
        )


def eager_ops(x: ac.Tensor, n: int) -> None:
    for _ in range(n):
        (x + 1.0).realize()


def variant(name: str, x: ac.Tensor, n: int) -> float:
    """Seconds per op of `n` eager ops under variant `name`."""
    if name == "no hook":
        dispatch.launch = unhooked  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        if name == "profiling":
            with ac.profile():
                eager_ops(x, n)
        else:
            eager_ops(x, n)
        return (time.perf_counter() - t0) / n
    finally:
        dispatch.launch = HOOKED  # type: ignore[assignment]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--ops", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    x = ac.randn(1024, device=args.device).realize()
    eager_ops(x, 50)  # compile and cache the plan
    names = ["no hook", "hook idle", "profiling"]
    best: dict[str, float] = dict.fromkeys(names, float("inf"))
    run: Callable[[str], float] = lambda name: variant(name, x, args.ops)  # noqa: E731
    for _ in range(args.repeat):
        for name in names:
            best[name] = min(best[name], run(name))
    base = best["no hook"]
    print(f"eager x + 1.0 on 1024 floats, device {x.device}: best of {args.repeat} x {args.ops}")
    for name in names:
        print(f"  {name:<10} {best[name] * 1e6:8.2f} us/op   {best[name] / base:6.3f}x no hook")


if __name__ == "__main__":
    main()
