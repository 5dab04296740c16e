"""The synthetic DLRM training step of issue 13, anychip against PyTorch, side by side:
samples/s at each thread count, and each run's peak memory.

    PYTHONPATH=src python bench/rec_dlrm.py [--quick] [--threads 1,2] [--json PATH]
    anychip rec bench [same options]

Model: 26 tables (Criteo-shaped sizes totalling ~2.5M rows, `anychip.rec.synthetic`) of
dim 64, one id per feature, 13 dense features through a 13-512-256-64 bottom MLP, dot
interactions, a 415-512-256-1 top MLP, BCE-with-logits; batch 2048. anychip: row-wise
Adagrad on the tables (anychip.rec.RowWiseAdagrad on row-sparse gradients), Adam on the
rest, eagerly and under anychip.jit. PyTorch: its twin (bench/rec_twins.py) with
nn.EmbeddingBag(sparse=True), torch.optim.Adagrad on the tables, Adam on the rest, eagerly;
and, where torchrec and fbgemm-gpu-cpu are installed, the twin with TorchRec's
FusedEmbeddingBagCollection (FBGEMM's table-batched embeddings, row-wise Adagrad fused into
backward) and Adam on the rest.
Both start from the same weights; the first step's loss (same weights, same batch) is
printed as the check that both train the same model. Each (framework, thread count) runs
in a process of its own (threads are fixed when OpenMP starts; peak memory is the
process's peak RSS), on the same batches, drawn before timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
for p in (SRC, str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

RUNS = ("torch", "torchrec", "anychip", "anychip_jit")
LR_TABLES, LR_DENSE = 0.01, 1e-3


def config(quick: bool, rows: int) -> dict[str, Any]:
    from anychip.rec.synthetic import criteo_table_sizes

    if quick:  # a smoke run: small tables and MLPs, a few steps
        return {"batch": 256, "dim": 16, "sizes": criteo_table_sizes(50_000),
                "bottom": [64, 16], "top": [64, 1], "steps": 6, "warmup": 2}  # fmt: skip
    return {"batch": 2048, "dim": 64, "sizes": criteo_table_sizes(rows),
            "bottom": [512, 256, 64], "top": [512, 256, 1], "steps": 12, "warmup": 3}  # fmt: skip


def _tables(cfg: dict[str, Any]) -> list[Any]:
    from anychip.rec.synthetic import criteo_tables

    return criteo_tables(cfg["dim"], cfg["sizes"])


def initial_values(
    named_shapes: list[tuple[str, tuple[int, ...]]],
) -> Iterator[tuple[str, np.ndarray]]:
    """The same starting weights for both frameworks, one parameter at a time (no second
    copy of the tables is ever held): tables U(-1/sqrt(rows), 1/sqrt(rows)) as TorchRec,
    Linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch's defaults."""
    rng = np.random.default_rng(0)
    fan_in = 1
    for name, shape in named_shapes:
        if name.startswith("ebc."):
            bound = 1.0 / np.sqrt(shape[0])
        else:
            fan_in = shape[1] if len(shape) == 2 else fan_in  # a bias follows its weight
            bound = 1.0 / np.sqrt(fan_in)
        yield name, rng.uniform(-bound, bound, shape).astype(np.float32)


def _batches(cfg: dict[str, Any], n: int) -> list[Any]:
    from anychip.rec.synthetic import SyntheticCriteo

    gen = SyntheticCriteo(cfg["sizes"], seed=0)
    rng = np.random.default_rng(1)
    return [gen.batch(rng, cfg["batch"]) for _ in range(n)]


def run_torch(
    cfg: dict[str, Any], threads: int, batches: list[Any]
) -> tuple[list[float], list[float]]:
    import rec_twins
    import torch

    torch.set_num_threads(threads)
    model = rec_twins.build(
        "dlrm", _tables(cfg), 13, sparse=True, bottom_mlp=cfg["bottom"], top_mlp=cfg["top"]
    )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in initial_values([(n, tuple(p.shape)) for n, p in params.items()]):
            params[name].copy_(torch.from_numpy(value))
    tables = list(model.ebc.parameters())
    ids_of = {id(p) for p in tables}
    dense = [p for p in model.parameters() if id(p) not in ids_of]
    opt_t = torch.optim.Adagrad(tables, lr=LR_TABLES)
    opt_d = torch.optim.Adam(dense, lr=LR_DENSE)
    return _torch_steps(cfg, batches, model, [opt_t, opt_d])


def _torch_steps(
    cfg: dict[str, Any], batches: list[Any], model: Any, opts: list[Any]
) -> tuple[list[float], list[float]]:
    """Per-step seconds and losses of a torch twin trained by `opts` (zero_grad, loss,
    backward, step of each) on `batches`."""
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    times, losses = [], []
    offsets = torch.arange(cfg["batch"] + 1)
    for i in range(cfg["steps"]):
        bt = batches[i % len(batches)]
        feats = {f"C{t + 1}": (torch.from_numpy(bt.ids[t]), offsets) for t in range(26)}
        x, y = torch.from_numpy(bt.dense), torch.from_numpy(bt.labels)
        t0 = time.perf_counter()
        for opt in opts:
            opt.zero_grad()
        loss = bce(model(x, feats), y)
        loss.backward()
        for opt in opts:
            opt.step()
        losses.append(float(loss))
        times.append(time.perf_counter() - t0)
    return times, losses


def run_torchrec(
    cfg: dict[str, Any], threads: int, batches: list[Any]
) -> tuple[list[float], list[float]]:
    """The twin with TorchRec's fused tables (FBGEMM table-batched embeddings, row-wise
    Adagrad inside backward) and Adam on the rest."""
    import rec_twins
    import torch

    torch.set_num_threads(threads)
    model = rec_twins.build(
        "dlrm", _tables(cfg), 13, fused_lr=LR_TABLES, bottom_mlp=cfg["bottom"], top_mlp=cfg["top"]
    )
    fused = model.ebc.fused.state_dict()  # views of the table-batched weights
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    with torch.no_grad():
        for name, value in initial_values(
            [(n.replace("ebc.fused.", "ebc."), s) for n, s in shapes]
        ):
            if name.startswith("ebc."):
                fused[name[len("ebc.") :]].copy_(torch.from_numpy(value))
            else:
                model.get_parameter(name).copy_(torch.from_numpy(value))
    dense = [p for n, p in model.named_parameters() if not n.startswith("ebc.")]
    # the tables' row-wise Adagrad runs inside backward: only the dense part has an optimizer
    return _torch_steps(cfg, batches, model, [torch.optim.Adam(dense, lr=LR_DENSE)])


def run_anychip(
    cfg: dict[str, Any], jit: bool, batches: list[Any]
) -> tuple[list[float], list[float]]:
    import anychip as ac
    from anychip.rec import RowWiseAdagrad, models

    dev = "cpu" if "cpu" in ac.devices() else ac.devices()[0]
    model = models.build(
        "dlrm", _tables(cfg), 13, device=dev, bottom_mlp=cfg["bottom"], top_mlp=cfg["top"]
    )
    params = dict(model.named_parameters())
    with ac.no_grad():
        for name, value in initial_values([(n, tuple(p.shape)) for n, p in params.items()]):
            params[name].copy_(ac.tensor(value, device=dev))
            params[name].realize()
    table_params = list(model.ebc.parameters())
    ids_of = {id(p) for p in table_params}
    dense = [p for p in model.parameters() if id(p) not in ids_of]
    opt_t = RowWiseAdagrad(table_params, lr=LR_TABLES)
    opt_d = ac.optim.Adam(dense, lr=LR_DENSE)
    bce = ac.nn.functional.binary_cross_entropy_with_logits

    def step(model: Any, opt_t: Any, opt_d: Any, x: Any, kjt: Any, y: Any) -> Any:
        opt_t.zero_grad()
        opt_d.zero_grad()
        loss = bce(model(x, kjt), y)
        loss.backward()
        opt_t.step()
        opt_d.step()
        return loss.realize()

    fn = ac.jit(step) if jit else step
    times, losses = [], []
    for i in range(cfg["steps"]):
        x, kjt, y = batches[i % len(batches)].tensors(dev)
        t0 = time.perf_counter()
        loss = fn(model, opt_t, opt_d, x, kjt, y)
        losses.append(loss.item())  # timed: a replay's kernels may run after it returns
        times.append(time.perf_counter() - t0)
    return times, losses


def child(run: str, threads: int, quick: bool, rows: int) -> dict[str, Any]:
    cfg = config(quick, rows)
    batches = _batches(cfg, 4)
    if run == "torch":
        times, losses = run_torch(cfg, threads, batches)
    elif run == "torchrec":
        times, losses = run_torchrec(cfg, threads, batches)
    else:
        times, losses = run_anychip(cfg, run == "anychip_jit", batches)
    sec = float(np.median(times[cfg["warmup"] :]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"samples_per_s": cfg["batch"] / sec, "ms_per_step": sec * 1e3, "peak_bytes": peak,
            "first_step_s": times[0], "losses": losses}  # fmt: skip


def measure(run: str, threads: int, quick: bool, rows: int) -> dict[str, Any] | str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": SRC}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, __file__, "--child", run, "--threads", str(threads), "--rows", str(rows)]
    proc = subprocess.run(
        cmd + (["--quick"] if quick else []), env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        return f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}"
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_arguments(p)
    p.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return run(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small tables, a few steps (smoke run)")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    p.add_argument("--rows", type=int, default=2_500_000, help="table rows in all (default 2.5M)")
    p.add_argument(
        "--only",
        default=",".join(RUNS),
        help=f"runs, comma-separated, of {RUNS} (torchrec where it is installed)",
    )
    p.add_argument("--json", default=None, help="write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "child", None):
        print(json.dumps(child(args.child, int(args.threads), args.quick, args.rows)))
        return 0
    cfg = config(args.quick, args.rows)
    runs = [r for r in args.only.split(",") if r]
    if "torchrec" in runs and importlib.util.find_spec("torchrec") is None:
        runs.remove("torchrec")
    print(f"synthetic DLRM step: batch {cfg['batch']}, 26 tables of {sum(cfg['sizes']):,} rows "
          f"x {cfg['dim']}, bottom 13-{'-'.join(map(str, cfg['bottom']))}, "
          f"top {'-'.join(map(str, cfg['top']))}")  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        for r in runs:
            got = measure(r, threads, args.quick, args.rows)
            results[f"{r}@{threads}"] = got if isinstance(got, dict) else {"error": got}
            peers = (results.get(f"torch@{threads}"), results.get(f"torchrec@{threads}"))
            _print_row(r, threads, got, *peers)
    if "torchrec" not in runs:
        print("torchrec: not installed here (issue 13 measured 4.3-5.3k samples/s at 2 threads, "
              "8.3-8.7k at 1, ~1.2 GiB); to add it: pip install --no-deps torchrec==1.8.0 "
              "fbgemm-gpu-cpu==1.8.0 tensordict pyvers pyre-extensions typing-inspect")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all("error" not in v for v in results.values()) else 1


def _print_row(run: str, threads: int, got: Any, torch_row: Any, torchrec_row: Any) -> None:
    if not isinstance(got, dict):
        print(f"{run:<12} {threads} thr  {got}")
        return
    ratio = ""
    for name, peer in (("torch", torch_row), ("torchrec", torchrec_row)):
        if run.startswith("anychip") and isinstance(peer, dict) and "samples_per_s" in peer:
            ratio += f"  {got['samples_per_s'] / peer['samples_per_s']:.2f}x {name}"
    print(f"{run:<12} {threads} thr  {got['samples_per_s']:9.0f} samples/s  "
          f"{got['ms_per_step']:8.1f} ms/step  peak {got['peak_bytes'] / 2**30:5.2f} GiB  "
          f"first step {got['first_step_s']:.1f}s, loss {got['losses'][0]:.5f}{ratio}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
