"""`anychip rec serve`: load a saved model, capture its batch classes, follow the update
log if asked, and serve HTTP with uvicorn until stopped (Ctrl-C or SIGTERM)."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from anychip.codegen import gemm
from anychip.errors import ArgumentError

if TYPE_CHECKING:  # the server's modules import starlette: only when serving
    from anychip.rec.serve.app import Server
    from anychip.rec.serve.follow import Follower

TOKEN_ENV = "ANYCHIP_REC_TOKEN"
SWITCH_INTERVAL_S = 0.0005
INFERENCE = ("process", "thread")


def read_token(path: str | None) -> str | None:
    """The update token: the content of `path` (stripped) if given, else $ANYCHIP_REC_TOKEN;
    None when neither is set (the server then refuses every update)."""
    if path is not None:
        try:
            with open(path) as f:
                token = f.read().strip()
        except OSError as e:
            raise ArgumentError(f"rec serve: cannot read --token-file {path!r}: {e}") from None
        if not token:
            raise ArgumentError(f"rec serve: --token-file {path!r} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="a model `rec train --save` wrote")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="catch up from and follow the update log there (redis://host:port)",
    )
    p.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help=f"the token POST /update needs (default: ${TOKEN_ENV})",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=1024,
        help="most candidate rows per inference batch (default 1024)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=1.0,
        help="longest a request waits for others to batch with (default 1 ms)",
    )
    p.add_argument("--queue", type=int, default=128,
                   help="requests that may wait; more get 503 (default 128)")  # fmt: skip
    p.add_argument(
        "--inference",
        choices=INFERENCE,
        default="process",
        help="run the model in a process of its own (default: the HTTP loop and the model "
        "never wait for each other's GIL) or in a thread of the server",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads a kernel runs on (default 1: a batch's kernels are small, waking "
        "threads costs more than it saves, and the other cores serve HTTP)",
    )


def build(
    model_dir: str,
    device: str = "cpu",
    max_batch: int = 1024,
    max_wait_ms: float = 1.0,
    queue: int = 128,
    token: str | None = None,
    redis: str | None = None,
    inference: str = "thread",
) -> tuple[Server, Follower | None]:
    """A server for the model in `model_dir`, warmed up (every batch class captured) and,
    with `redis`, caught up from the update log, whose follower is started. `inference`:
    the worker is a thread of this process ("thread") or a process of its own ("process",
    rec/serve/process.py; stopped with the app's lifespan)."""
    from anychip.rec.serve.app import Server
    from anychip.rec.serve.batching import Batcher
    from anychip.rec.serve.follow import Follower
    from anychip.rec.serve.metrics import Metrics
    from anychip.rec.serve.model import ServedModel
    from anychip.rec.serve.process import InferenceProcess

    if queue < 1 or max_wait_ms < 0:
        raise ArgumentError("rec serve: --queue must be >= 1 and --max-wait-ms >= 0")
    if inference not in INFERENCE:
        raise ArgumentError(f"rec serve: --inference is one of {INFERENCE}, got {inference!r}")
    metrics = Metrics()
    if inference == "process":
        worker = InferenceProcess(model_dir, device, max_batch, max_wait_ms / 1000, queue, metrics)
        server = Server(worker, worker, metrics, token)
        observe = worker.observe
    else:
        model = ServedModel(model_dir, device, max_batch)
        model.warmup()
        server = Server(model, Batcher(model, metrics, max_wait_ms / 1000, queue), metrics, token)
        observe = model.features.observe
    follower = None
    if redis:
        follower = Follower(redis, server.apply, lambda: server.model.version, observe)
        n = follower.catch_up()
        print(f"anychip rec serve: caught up {n} updates and {follower.observed} events from "
              f"{redis}", flush=True)  # fmt: skip
        follower.start()
    return server, follower


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from anychip.rec.serve.app import make_app

    token = read_token(args.token_file)
    if args.threads < 1:
        raise ArgumentError(f"rec serve: --threads must be >= 1, got {args.threads}")
    # read by OpenMP when the first kernel with threads loads, and by the GEMM planner
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    gemm.host_info.cache_clear()
    t0 = time.perf_counter()
    server, follower = build(args.model, args.device, args.max_batch, args.max_wait_ms,
                             args.queue, token, args.redis, args.inference)  # fmt: skip
    model = server.model
    # the model, its captures and compiled programs live as long as the server: out of the
    # cyclic collector's scans (a full scan of them: ~20-35 ms, in the tail of the latency)
    gc.collect()
    gc.freeze()
    print(
        f"anychip rec serve: {os.path.basename(model.path)} version {model.version}, batch "
        f"classes {model.classes} ready in {time.perf_counter() - t0:.1f}s; "
        f"http://{args.host}:{args.port} (inference in a {args.inference}; updates "
        f"{'on' if token else 'off: no token'})",
        flush=True,
    )
    # the event loop and the inference thread share the GIL; a thread waiting for it gets
    # it after this interval at most (default 5 ms, a whole latency budget): 0.5 ms
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    config = uvicorn.Config(
        make_app(server), host=args.host, port=args.port, log_level="warning",
        access_log=False, lifespan="on",
    )  # fmt: skip
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for
    # the handler in place before it: this one lets the command end normally (exit 0)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run()
    finally:
        if follower is not None:
            follower.stop()
    print("anychip rec serve: stopped", flush=True)
    return 0
