"""`anychip rec ...`: the recommendation engine's commands, each a sub-subcommand
registered with `@subcommand` in this file (`anychip rec bench`, `anychip rec train`).

    anychip rec train --dataset ml-100k --model deepfm --protocol online [--device cpu]
        [--json PATH] [--plot PNG] [--save DIR]
    anychip rec train --follow redis://HOST:PORT --publish http://HOST:PORT
        [--model DIR | --dataset ml-100k] [--sync-every SECONDS] [--token-file PATH]
    anychip rec replay --dataset ml-100k --from test --speed 60 --redis URL --url SERVER
    anychip rec replay --report [PATH]
    anychip rec serve --model DIR --port P [--redis URL] [--token-file PATH] ...
    anychip rec loadtest --url URL --qps 500 --duration 30 --candidates 100 [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from anychip.cli import Configure, Run, command
from anychip.errors import ArgumentError

SUBCOMMANDS: dict[str, tuple[str, Configure, Run]] = {}
MODELS = ("dlrm", "dcn", "deepfm", "wide_deep", "mf")  # as anychip.rec.models.MODELS


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
        "--only",
        default="torch,torchrec,anychip,anychip_jit",
        help="runs, comma-separated (default all; torchrec where it is installed)",
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


# --- anychip rec train ---------------------------------------------------------------
def _train_args(t: argparse.ArgumentParser) -> None:
    t.add_argument("--dataset", default="ml-100k", choices=["ml-100k"])
    t.add_argument(
        "--path", default=None,
        help="folder with u.data, u.user, u.item (default: the copy in the recbole package)",
    )  # fmt: skip
    t.add_argument(
        "--model", default="deepfm", metavar="NAME|DIR",
        help=f"one of {', '.join(MODELS)}; with --follow also a saved model directory",
    )  # fmt: skip
    t.add_argument("--protocol", default="online", choices=["static", "online"])
    t.add_argument("--device", default=None, help="device (default: ANYCHIP_DEVICE or ref)")
    t.add_argument("--json", default=None, metavar="PATH", help="write the figures as JSON")
    t.add_argument("--plot", default=None, metavar="PNG", help="plot AUC per shard (matplotlib)")
    t.add_argument("--save", default=None, metavar="DIR", help="write model + feature store")
    t.add_argument("--epochs", type=int, default=10, help="most epochs of static training")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--dim", type=int, default=16, help="embedding width")
    t.add_argument(
        "--no-history", action="store_true",
        help="leave out the behaviour features (recent items, running rates)",
    )  # fmt: skip
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=None, help="use only the first N events")
    _follow_args(t)


def _follow_args(t: argparse.ArgumentParser) -> None:
    """`anychip rec train --follow URL`: train online from the event log (rec/follow.py)."""
    f = t.add_argument_group("online training from the event log (docs/rec-serving.md)")
    f.add_argument("--follow", default=None, metavar="URL", help="Redis URL of the event log")
    f.add_argument("--publish", default=None, metavar="URL", help="server to POST updates to")
    f.add_argument("--sync-every", type=float, default=10.0, metavar="SECONDS")
    f.add_argument("--full-every", type=int, default=20, help="a full update every N versions")
    f.add_argument("--token-file", default=None, metavar="PATH",
                   help="update token (default: $ANYCHIP_REC_TOKEN)")  # fmt: skip
    f.add_argument("--max-events", type=int, default=None, help="stop after N events")
    f.add_argument("--max-seconds", type=float, default=None, help="stop after S seconds")
    f.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="stop when no event came for this long")  # fmt: skip


class Bar:
    """A one-line progress bar per phase on stderr: `epoch 1  [#####     ] 141/282 9.5s`."""

    def __init__(self, stream: Any = None, width: int = 30) -> None:
        self.stream = sys.stderr if stream is None else stream  # sys.stderr of the call's time
        self.width, self.t0 = width, time.perf_counter()

    def __call__(self, phase: str, done: int, total: int) -> None:
        fill = self.width * done // max(total, 1)
        secs = time.perf_counter() - self.t0
        bar = "#" * fill + " " * (self.width - fill)
        self.stream.write(f"\r{phase:<9}[{bar}] {done}/{total} {secs:6.1f}s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def table(rows: list[tuple[str, str]]) -> str:
    """Two aligned columns under a rule."""
    w = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{w}}  value", "-" * (w + 12)]
    return "\n".join(lines + [f"{k:<{w}}  {v}" for k, v in rows])


@subcommand(
    "train", "train and evaluate a CTR model on MovieLens-100k under a protocol", _train_args
)
def _train(args: argparse.Namespace) -> int:
    from anychip.rec import protocol
    from anychip.rec.train import Settings, train

    if args.follow is not None:
        from anychip.rec.follow import main

        return main(args)
    if args.model not in MODELS:
        raise ArgumentError(f"rec train: unknown model {args.model!r}; choose one of {MODELS}")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ArgumentError("rec train: --plot needs matplotlib (pip install 'anychip[plot]')")
    cfg = protocol.Config(batch_size=args.batch_size, max_epochs=args.epochs, seed=args.seed)
    settings = Settings(
        dim=args.dim, lr=args.lr, history=not args.no_history, seed=args.seed, run=cfg
    )
    print(
        f"anychip rec train: {args.model} on {args.dataset}, {args.protocol} protocol, "
        f"device {args.device or 'default'}"
    )
    res, trainer = train(
        args.model, args.protocol, device=args.device, settings=settings,
        dataset=args.dataset, path=args.path, limit=args.limit, progress=Bar(),
    )  # fmt: skip
    m = res.metrics
    print(table([
        ("AUC", f"{m['auc']:.4f}"), ("logloss", f"{m['logloss']:.4f}"),
        ("GAUC", f"{m['gauc']:.4f}"), ("calibration", f"{m['calibration']:.4f}"),
        ("events/s", f"{res.events_per_s:,.0f}"), ("epochs", str(res.epochs)),
    ]))  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**m, "events_per_s": res.events_per_s, "model": args.model,
                       "protocol": args.protocol, "epochs": res.epochs,
                       "shard_auc": res.shard_auc}, f, indent=2)  # fmt: skip
    if args.plot:
        _plot(res, args.plot, f"{args.model} on {args.dataset}, {args.protocol}")
    if args.save:
        from anychip.rec import store

        store.save(args.save, args.model, trainer, settings)
        print(f"saved model and feature store to {args.save}")
    return 0


def _plot(res: Any, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if res.shard_auc:
        ax.plot(range(1, len(res.shard_auc) + 1), res.shard_auc, marker=".")
        ax.set_xlabel("test shard (time order)")
    else:  # static: one test period, shown as a line at its AUC
        ax.axhline(res.metrics["auc"])
        ax.set_xlabel("test period")
    ax.axhline(
        res.metrics["auc"], linestyle="--", color="gray", label=f"AUC {res.metrics['auc']:.3f}"
    )
    ax.set_ylabel("AUC")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- anychip rec replay --------------------------------------------------------------
def _replay_args(r: argparse.ArgumentParser) -> None:
    r.add_argument("--dataset", default="ml-100k", choices=["ml-100k"])
    r.add_argument("--path", default=None, help="folder with the dataset's files")
    r.add_argument("--from", dest="period", default="test", choices=["test"])
    r.add_argument("--speed", type=float, default=60.0,
                   help="seconds of dataset time per second (default 60)")  # fmt: skip
    r.add_argument("--redis", default=None, metavar="URL", help="Redis URL of the event log")
    r.add_argument("--url", default=None, metavar="SERVER", help="prediction server")
    r.add_argument("--candidates", type=int, default=20, help="items per request (default 20)")
    r.add_argument("--limit", type=int, default=None, help="send at most N events")
    r.add_argument("--max-seconds", type=float, default=None, help="stop after S seconds")
    r.add_argument("--probe-every", type=float, default=0.5, metavar="SECONDS",
                   help="ask the server this often between events (0: never)")  # fmt: skip
    r.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                   help="keep probing this long after the last event")  # fmt: skip
    r.add_argument("--seed", type=int, default=0, help="candidate sampling")
    r.add_argument("--out", default="replay.jsonl", metavar="PATH", help="records (JSON lines)")
    r.add_argument("--report", nargs="?", const="", default=None, metavar="PATH",
                   help="print the report of a replay's records (default: --out)")  # fmt: skip


@subcommand(
    "replay",
    "replay a dataset's events to the log at an accelerated clock, scoring each on the server",
    _replay_args,
)
def _replay(args: argparse.Namespace) -> int:
    from anychip.rec import replay

    if args.report is not None:
        summary = replay.report(args.report or args.out)
        print(table([(k, f"{v:.4f}" if isinstance(v, float) else str(v))
                     for k, v in summary.items()]))  # fmt: skip
        return 0
    if args.redis is None or args.url is None:
        raise ArgumentError("rec replay: give --redis URL and --url SERVER (or --report)")
    return replay.main(args)


# --- anychip rec serve, anychip rec loadtest (src/anychip/rec/serve/, rec/loadtest.py) ---
def _serve_args(p: argparse.ArgumentParser) -> None:
    from anychip.rec.serve import main

    main.configure(p)


@subcommand("serve", "serve a saved model over HTTP (POST /predict, /update; docs/rec-serving.md)",
            _serve_args)  # fmt: skip
def _serve(args: argparse.Namespace) -> int:
    from anychip.rec.serve import main

    return main.run(args)


def _loadtest_args(p: argparse.ArgumentParser) -> None:
    from anychip.rec import loadtest

    loadtest.configure(p)


@subcommand("loadtest", "open-loop Poisson load on a server, latency from scheduled send times",
            _loadtest_args)  # fmt: skip
def _loadtest(args: argparse.Namespace) -> int:
    from anychip.rec import loadtest

    return loadtest.run(args)
