"""`anychip rec ...`: the recommendation engine's commands, each a sub-subcommand
registered with `@subcommand` in this file (`anychip rec bench`, `anychip rec train`).
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from anychip.cli import Configure, Run, command
from anychip.errors import ArgumentError

SUBCOMMANDS: dict[str, tuple[str, Configure, Run]] = {}


def subcommand(name: str, help: str, configure: Configure) -> Callable[[Run], Run]:
    """Register `fn(args) -> exit code` as `anychip rec <name>`."""

    def register(fn: Run) -> Run:
        SUBCOMMANDS[name] = (help, configure, fn)
        return fn

    return register


def _rec_args(p: argparse.ArgumentParser) -> None:
    subs = p.add_subparsers(dest="rec_command", metavar="SUBCOMMAND")
    for name, (text, configure, fn) in sorted(SUBCOMMANDS.items()):
        sub = subs.add_parser(name, help=text, description=text)
        configure(sub)
        sub.set_defaults(_rec_run=fn)


@command("rec", "recommendation models: train and evaluate, benchmark a training step", _rec_args)
def _rec(args: argparse.Namespace) -> int:
    fn = getattr(args, "_rec_run", None)
    if fn is None:
        names = ", ".join(sorted(SUBCOMMANDS))
        raise ArgumentError(f"rec: give a subcommand ({names}); see anychip rec --help")
    return int(fn(args) or 0)


# --- anychip rec bench ---------------------------------------------------------------
def _bench_script() -> Path:
    """bench/rec_dlrm.py of the source checkout this package runs from."""
    path = Path(__file__).resolve().parents[3] / "bench" / "rec_dlrm.py"
    if not path.is_file():
        raise ArgumentError(
            f"rec bench: {path} not found; the benchmark ships with the source checkout "
            "(run anychip from it: PYTHONPATH=src)"
        )
    return path


def _load_bench() -> ModuleType:
    path = _bench_script()
    spec = importlib.util.spec_from_file_location("rec_dlrm", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small tables, a few steps (smoke run)")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    p.add_argument("--rows", type=int, default=2_500_000, help="table rows in all (default 2.5M)")
    p.add_argument(
        "--only", default="torch,anychip,anychip_jit", help="runs, comma-separated (default all)"
    )
    p.add_argument("--json", default=None, help="write the figures to this JSON file")


@subcommand(
    "bench",
    "the synthetic DLRM training step (batch 2048, 26 tables, ~2.5M rows) against PyTorch",
    _bench_args,
)
def _bench(args: argparse.Namespace) -> int:
    run: Run = _load_bench().run
    return int(run(args) or 0)
