"""Why served scores differ from part 1's online protocol: the live loop of bench/rec_sync.py
(trainer following the events, server applying its deltas, replayer asking before each
event) emulated in one process without clocks, so each difference is switched on alone.

From one static training (part 1's), over the first --limit events of ml-100k's test
period, AUC of:

- `part1_online`: part 1's online protocol (50 shards of the test period, predict then train);
- `static_fresh`: the starting weights with the stream's features (no learning at all);
- `static_frozen` / `static_served`: the same weights through the server's feature store,
  frozen at the snapshot / following the events (`ServingFeatures.observe`);
- `follower`: the trainer's own predict-then-train AUC (`Follower`, reading every
  --train-every events, training on batches of --batch: --batch 4 trains on every read,
  as the follower did before it waited for whole batches);
- `served_frozen` / `served`: a `ServedModel` scoring each event (its item and
  --candidates - 1 sampled ones) before the event enters the log, applying the follower's
  delta every --sync events (10 s at speed 3600 is about 180), features frozen / following.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python bench/rec_served_gap.py --limit 10000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np

from anychip.rec import load_movielens, metrics, protocol
from anychip.rec.follow import Follower, OnlineFeatures, from_dataset, from_snapshot, save_start
from anychip.rec.log import EVENTS, Event, MemoryLog
from anychip.rec.replay import period_rows
from anychip.rec.serve.features import Query
from anychip.rec.serve.model import ServedModel
from anychip.rec.train import Settings


def serve_loop(
    args: argparse.Namespace, ml: Any, rows: np.ndarray, start_dir: str
) -> dict[str, Any]:
    """The emulated live loop: served AUCs (frozen and following features) and the
    follower's own."""
    model, config, _ = from_snapshot(start_dir, args.device)
    n_train = len(protocol.split(len(ml)).train)
    log = MemoryLog()
    feats = OnlineFeatures(ml, n_train, bool(config["history"]), dict(config["id_rows"]))
    follower = Follower(model, feats, log, None, batch_size=args.batch, device=args.device,
                        full_every=10**9, say=lambda s: None)  # fmt: skip
    servers = {"served": ServedModel(start_dir, args.device, 64),
               "served_frozen": ServedModel(start_dir, args.device, 64)}  # fmt: skip
    for s in servers.values():
        s.warmup()
    rng = np.random.default_rng(0)
    scores: dict[str, list[float]] = {k: [] for k in servers}
    n_items = ml.num_items - 1
    for n, row in enumerate(rows.tolist(), 1):
        user, item, ts = int(ml.user[row]), int(ml.item[row]), int(ml.timestamp[row])
        others = rng.choice(n_items - 1, args.candidates - 1, replace=False) + 1
        items = np.array([item, *np.where(others >= item, others + 1, others)], np.int64)
        for name, s in servers.items():
            scores[name].append(float(s.score([Query(user, items, ts)])[1][0][0]))
        e = Event(user, item, int(ml.label[row]), ts, 0.0, float(ml.rating[row]))
        servers["served"].features.observe([e])
        log.add(EVENTS, e.fields())
        if n % args.train_every == 0:
            while follower.step(block_ms=0):
                pass
        if n % args.sync == 0:
            update = follower.publish()
            for s in servers.values():
                s.apply(update)
    y = ml.label[rows]
    out = {k: metrics.auc(v, y) for k, v in scores.items()}
    out["follower"] = metrics.auc(follower.stats.probs, follower.stats.labels)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="dcn")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="events of the test period")
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--train-every", type=int, default=4, help="events per follower read")
    p.add_argument("--batch", type=int, default=256, help="the follower's training batch")
    p.add_argument("--sync", type=int, default=180, help="events per published delta")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    ml = load_movielens()
    cfg = protocol.Config(max_epochs=args.epochs)
    settings = Settings(run=cfg)
    test = period_rows(ml, "test")
    rows = test if args.limit is None else test[: args.limit]
    t0 = time.perf_counter()
    _, trainer = from_dataset(args.model, ml, settings, args.device)
    print(f"static training: {time.perf_counter() - t0:.0f} s", flush=True)
    start_dir = os.path.join(tempfile.mkdtemp(prefix="rec-gap-"), "start")
    save_start(start_dir, args.model, trainer, ml, settings)
    y = ml.label[rows]
    out: dict[str, Any] = {"model": args.model, "events": len(rows)}
    out["static_fresh"] = metrics.auc(trainer.predict(rows), y)
    for name, follow in (("static_frozen", False), ("static_served", True)):
        s = ServedModel(start_dir, args.device, 64)
        probs = []
        for row in rows.tolist():
            user, item, ts = int(ml.user[row]), int(ml.item[row]), int(ml.timestamp[row])
            probs.append(float(s.score([Query(user, np.array([item]), ts)])[1][0][0]))
            if follow:
                s.features.observe([Event(user, item, int(ml.label[row]), ts, 0.0,
                                          float(ml.rating[row]))])  # fmt: skip
        out[name] = metrics.auc(probs, y)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, flush=True)
    out.update(serve_loop(args, ml, rows, start_dir))
    cuts = []
    for shard in np.array_split(test, cfg.shards):  # part 1's online walk over the period
        cuts.append(trainer.predict(shard))
        for i in range(0, len(shard), cfg.batch_size):
            trainer.fit(shard[i : i + cfg.batch_size])
    out["part1_online"] = metrics.auc(np.concatenate(cuts)[: len(rows)], y)
    for k, v in out.items():
        print(f"{k:16s} {v:.4f}" if isinstance(v, float) else f"{k:16s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
