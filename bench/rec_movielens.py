"""MovieLens-100k: anychip's CTR models and their PyTorch twins on the same protocols,
side by side. Targets (issue 13): on the online protocol the best model reaches AUC >= 0.72;
each anychip model is within +-0.003 AUC of its twin; a collisionless id table beats a
hashed one of a quarter of the rows by >= 0.03 AUC (DCN-v2, base features; "dcn/dyn" keeps
user and item ids in DynamicEmbedding tables, "dcn" in tables of one row per id).

    PYTHONPATH=src python bench/rec_movielens.py [--models dcn deepfm ...] [--device cpu]
        [--features history base] [--no-torch] [--no-hashed] [--json PATH]

Each twin starts from the anychip model's initial weights (copied), sees the same batches
in the same order (one static training; the static test, then the online walk) and uses
the same Adam. "history" adds the behaviour features (each user's recent and liked items,
running like rates: anychip.rec.history); "base" is the plain feature set.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from anychip.rec import load_movielens, protocol  # noqa: E402
from anychip.rec.features import MovieLensFeatures  # noqa: E402
from anychip.rec.models import MODELS  # noqa: E402
from anychip.rec.train import Settings, Trainer, adam, build, hparams_for, table_configs  # noqa: E402

try:
    import rec_twins
    import torch
except ImportError:  # the PyTorch column is skipped
    torch = None  # type: ignore[assignment]

TARGET_AUC, TWIN_GAP, HASH_GAP = 0.72, 0.003, 0.03


class TorchLearner:
    """The `protocol.Learner` of a PyTorch twin: the same batches, BCE and Adam."""

    def __init__(self, twin: Any, features: MovieLensFeatures, lr: float) -> None:
        self.twin, self.features = twin, features
        self.opt = torch.optim.Adam(twin.parameters(), lr=lr)

    def _forward(self, rows: np.ndarray) -> tuple[Any, Any]:
        b = self.features.batch(rows)
        feats = {
            k: (torch.from_numpy(j.values), torch.from_numpy(j.offsets))
            for k, j in b.sparse.items()
        }
        dense = torch.from_numpy(b.dense) if b.dense.shape[1] else None
        return self.twin(dense, feats), torch.from_numpy(b.labels)

    def fit(self, rows: np.ndarray) -> None:
        self.twin.train()
        logits, y = self._forward(rows)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self.twin.eval()
        with torch.no_grad():
            logits, _ = self._forward(rows)
        return torch.sigmoid(logits).double().numpy()

    def snapshot(self) -> Any:
        return copy.deepcopy((self.twin.state_dict(), self.opt.state_dict()))

    def restore(self, state: Any) -> None:
        self.twin.load_state_dict(state[0])
        self.opt.load_state_dict(state[1])


def run_pair(
    name: str, features: MovieLensFeatures, settings: Settings, device: str, with_torch: bool
) -> dict[str, dict[str, Any]]:
    """{'anychip': {protocol: Result}, 'torch': {...}} from one initialisation."""
    ml = features.ml
    model = build(name, features, settings, device)
    out: dict[str, dict[str, Any]] = {}
    if with_torch:
        torch.manual_seed(settings.seed)
        tables = table_configs(features, settings.dim)
        twin = rec_twins.build(name, tables, features.dense_in, sparse=False,
                               **hparams_for(name, settings.dim))  # fmt: skip
        rec_twins.copy_into(twin, model)  # both start from the same weights
    cfg = settings.run
    trainer = Trainer(model, adam(settings.lr), features, cfg.batch_size, device)
    out["anychip"] = protocol.run_protocols(protocol.PROTOCOLS, trainer, ml.label, ml.user, cfg)
    if with_torch:
        learner = TorchLearner(twin, features, settings.lr)
        out["torch"] = protocol.run_protocols(protocol.PROTOCOLS, learner, ml.label, ml.user, cfg)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    ap.add_argument("--features", nargs="*", default=["history", "base"],
                    choices=["history", "base"])  # fmt: skip
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-hashed", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with_torch = torch is not None and not args.no_torch
    if with_torch:
        torch.set_num_threads(args.threads)
    ml = load_movielens()
    settings = Settings(run=protocol.Config(max_epochs=args.epochs))
    rows: list[dict[str, Any]] = []
    header = f"{'features':<8} {'model':<10} {'protocol':<7} {'anychip':>8} {'torch':>8} " \
             f"{'diff':>7} {'epochs':>6} {'ev/s ac':>8} {'ev/s pt':>8}"  # fmt: skip
    print(f"MovieLens-100k, {len(ml)} events, device {args.device}\n{header}\n{'-' * len(header)}")
    runs: list[tuple[str, str, Any]] = [(f, m, None) for f in args.features for m in args.models]
    if not args.no_hashed:  # DCN-v2 on plain features: collisionless tables vs hashed ones
        runs += [("base", "dcn", "dynamic"), ("base", "dcn", 0.25)]
    for feat, name, table in runs:
        frac = table if isinstance(table, float) else None
        features = MovieLensFeatures(ml, feat == "history", hash_fraction=frac)
        s = dataclasses.replace(settings, dynamic=table == "dynamic")
        t0 = time.perf_counter()
        res = run_pair(name, features, s, args.device, with_torch and table is None)
        label = name + {None: "", "dynamic": "/dyn", 0.25: "/hash¼"}[table]
        for proto in protocol.PROTOCOLS:
            rows.append(_row(feat, label, proto, res["anychip"][proto], res.get("torch", {})))
            print(_line(rows[-1]), flush=True)
        print(f"  ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    _verdicts(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _row(feat: str, label: str, proto: str, a: Any, torch_res: dict[str, Any]) -> dict[str, Any]:
    row = {
        "features": feat, "model": label, "protocol": proto, "anychip_auc": a.metrics["auc"],
        "anychip": a.metrics, "epochs": a.epochs, "anychip_events_per_s": a.events_per_s,
    }  # fmt: skip
    t = torch_res.get(proto)
    if t is not None:
        row.update(torch_auc=t.metrics["auc"], torch=t.metrics, torch_events_per_s=t.events_per_s)
    return row


def _line(r: dict[str, Any]) -> str:
    tcol = dcol = tev = "-"
    if "torch_auc" in r:
        tcol, dcol = f"{r['torch_auc']:.4f}", f"{r['anychip_auc'] - r['torch_auc']:+.4f}"
        tev = f"{r['torch_events_per_s']:,.0f}"
    head = f"{r['features']:<8} {r['model']:<10} {r['protocol']:<7} {r['anychip_auc']:>8.4f}"
    return (
        f"{head} {tcol:>8} {dcol:>7} {r['epochs']:>6} {r['anychip_events_per_s']:>8,.0f} {tev:>8}"
    )


def _verdicts(rows: list[dict[str, Any]]) -> None:
    online = [r for r in rows if r["protocol"] == "online" and "/" not in r["model"]]
    if online:
        best = max(online, key=lambda r: r["anychip_auc"])
        ok = best["anychip_auc"] >= TARGET_AUC
        print(f"best online AUC: {best['model']} ({best['features']}) {best['anychip_auc']:.4f} "
              f"(target >= {TARGET_AUC}: {'met' if ok else 'NOT met'})")  # fmt: skip
    twins = [abs(r["anychip_auc"] - r["torch_auc"]) for r in rows if "torch_auc" in r]
    if twins:
        ok = max(twins) <= TWIN_GAP
        print(f"largest |anychip - torch| AUC gap: {max(twins):.4f} "
              f"(target <= {TWIN_GAP}: {'met' if ok else 'NOT met'})")  # fmt: skip
    for proto in protocol.PROTOCOLS:
        pick = {r["model"]: r["anychip_auc"] for r in rows
                if r["features"] == "base" and r["protocol"] == proto}  # fmt: skip
        for full in ("dcn", "dcn/dyn"):
            if full in pick and "dcn/hash¼" in pick:
                gap = pick[full] - pick["dcn/hash¼"]
                verdict = "met" if gap >= HASH_GAP else "NOT met"
                print(f"{full} - dcn/hash¼ AUC, {proto}: {gap:+.4f} (>= {HASH_GAP}: {verdict})")


if __name__ == "__main__":
    sys.exit(main())
