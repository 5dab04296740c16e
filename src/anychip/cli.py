"""The `anychip` command: subcommands registered with `@command`, found at start-up.

Any package under `anychip/` that has a `cli.py` (say `anychip/npu/cli.py`) is imported
when the command runs; its `@command(...)` functions become `anychip <name> ...`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], "int | None"]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Configure | None
    run: Run


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Configure | None = None) -> Callable[[Run], Run]:
    """Register `fn(args) -> exit code` as `anychip <name>`; `configure(parser)` adds its
    arguments (or its own sub-subcommands).

    >>> @command("hello", "say hello")
    ... def hello(args):
    ...     print("hello")
    >>> main(["hello"])
    hello
    0
    >>> del COMMANDS["hello"]
    """

    def register(fn: Run) -> Run:
        COMMANDS[name] = Command(name, help, configure, fn)
        return fn

    return register


def _discover() -> None:
    """Import every `anychip/<package>/cli.py` so its commands register themselves."""
    root = os.path.dirname(os.path.abspath(__file__))
    for entry in sorted(os.listdir(root)):
        if os.path.isfile(os.path.join(root, entry, "cli.py")):
            importlib.import_module(f"anychip.{entry}.cli")


def build_parser() -> argparse.ArgumentParser:
    from anychip import __version__

    _discover()
    parser = argparse.ArgumentParser(
        prog="anychip", description="anychip: write a model once, train and serve it on any chip."
    )
    parser.add_argument("--version", action="version", version=f"anychip {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in sorted(COMMANDS.values(), key=lambda c: c.name):
        sub = subs.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.configure is not None:
            cmd.configure(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `anychip` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    from anychip.errors import Error

    try:
        code = run(args)
    except Error as e:  # bad input (an unknown device, ...): a message, not a traceback
        print(f"anychip {args.command}: error: {e}", file=sys.stderr)
        return 1
    return int(code or 0)


# --- built-in commands -------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default=None, help="device to train on (default: ANYCHIP_DEVICE or ref)"
    )
    p.add_argument("--epochs", type=int, default=20, help="passes over the training set")
    p.add_argument("--seed", type=int, default=0, help="seed for data, weights and batch order")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=32)


@command("demo", "train a small classifier (three spirals, an MLP, Adam) end to end", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from anychip import demo
    from anychip.runtime.device import canonical

    device = canonical(args.device)
    print(
        f"anychip demo: a 2-64-64-3 MLP learns three interleaved spirals on device {device!r} "
        f"(target: {demo.TARGET_ACCURACY:.0%} accuracy on held-out points)"
    )
    t0 = time.perf_counter()
    history = demo.train(args.epochs, device, args.seed, args.batch_size, args.lr)
    final = history[-1].test_accuracy if history else 0.0
    ok = final >= demo.TARGET_ACCURACY
    verdict = "reached" if ok else "did NOT reach the target:"
    print(
        f"{verdict} {final:.1%} test accuracy (target {demo.TARGET_ACCURACY:.0%}) in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    return 0 if ok else 1


def _no_args(p: argparse.ArgumentParser) -> None:
    return None


@command("devices", "list the devices anychip can use on this machine", _no_args)
def _devices(args: argparse.Namespace) -> int:
    from anychip.runtime.device import all_backends, default_device

    for name, why in sorted(all_backends().items()):
        mark = "*" if name == default_device() else " "
        print(f"{mark} {name:<8} {'available' if why is None else 'unavailable: ' + why}")
    return 0


def _tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes", type=int, nargs="*", default=[256, 512, 1024, 2048],
        help="square matrix sizes to tune (default: 256 512 1024 2048)",
    )  # fmt: skip
    p.add_argument(
        "--mlp", type=int, nargs=3, default=[256, 1024, 1024], metavar=("BATCH", "IN", "OUT"),
        help="a Linear layer whose forward and backward GEMMs to tune (default: 256 1024 1024)",
    )  # fmt: skip
    p.add_argument("--dtype", default="float32", help="input dtype (default: float32)")
    p.add_argument("--force", action="store_true", help="re-tune shapes already in the cache")


@command("tune", "time GEMM tilings on this machine and cache the fastest per shape", _tune_args)
def _tune(args: argparse.Namespace) -> int:
    from anychip.runtime import tune

    specs = tune.workload(args.sizes, tuple(args.mlp), args.dtype)
    tune.tune_workload(specs, force=args.force)
    return 0


if __name__ == "__main__":
    # Run as `python -m anychip.cli`: dispatch through the importable module, where the
    # subpackages' commands (`anychip npu ...`) register themselves.
    from anychip.cli import main as _main

    sys.exit(_main())
