"""Live sync on MovieLens-100k: the figures of issue 14's closing note for the trainer side.

One static training (part 1's: epochs on the fit period, early stopping on the validation
period), saved as the starting model; then, from that same state:

1. part 1's online protocol over the replayed events (predict a shard of 400, then train
   on it): the online AUC to compare with;
2. the live loop: a private redis-server, `anychip rec train --follow` (a process) on the
   event log publishing every `--sync-every` seconds, and the replayer sending the test
   period at `--speed`. With `--serve` (needs the serve branch: `anychip rec serve`) a
   prediction server runs from the starting model and the replay records served scores:
   served AUC, versions seen and freshness (event in the log -> first response by a
   version that learned it). Without it the replayer only feeds the log and the figures
   are the trainer's own: its online AUC and log-to-publish delay (sent_at -> the
   published_at of the first update whose events_upto covers the event), a lower bound
   of freshness.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python bench/rec_sync.py --speed 3600 \\
        --max-seconds 300 --sync-every 10 [--serve] [--json rec_sync.json]

`--loadtest` measures instead the server's p99 under `anychip rec loadtest` (--qps, 100
candidates) alone and while real deltas of the trainer are POSTed every --sync-every
seconds, interleaved (--rounds of --duration seconds each), best p99 of each kind:

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python bench/rec_sync.py --loadtest --qps 500

ml-100k's test period spans 47 days: at --speed 3600 (an hour a second) it takes 1,125 s;
--max-seconds or --limit replay a prefix, and the online AUC is then taken over the same
prefix.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from anychip.rec import load_movielens, metrics, protocol, wire
from anychip.rec.follow import from_dataset, save_start
from anychip.rec.log import EVENTS, UPDATES, RedisServer, free_port, id_key, open_log
from anychip.rec.replay import Plan, Replayer, period_rows, read as read_records, report
from anychip.rec.train import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def part1_online(trainer: Any, rows: np.ndarray, labels: np.ndarray, cfg: Any) -> np.ndarray:
    """Part 1's online protocol over `rows`: 50 shards of the whole test period, each
    predicted, then trained on in batches (as protocol.run's online walk)."""
    probs = []
    for shard in np.array_split(rows, cfg.shards):
        probs.append(trainer.predict(shard))
        for i in range(0, len(shard), cfg.batch_size):
            trainer.fit(shard[i : i + cfg.batch_size])
    return np.concatenate(probs)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "anychip", "rec", *args]


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no server at {url} after {timeout} s")


def publish_delay(records: dict[str, list[dict[str, Any]]]) -> np.ndarray:
    """Per event: published_at of the first update whose events_upto covers it - sent_at
    (from the replay's records: the updates stream itself is trimmed)."""
    marks = sorted(
        (v["published_at"], id_key(v["events_upto"]))
        for v in records["version"]
        if v["events_upto"]
    )
    out = []
    for e in records["event"]:
        key = id_key(e["id"])
        first = next((t for t, upto in marks if upto >= key), float("nan"))
        out.append(first - e["sent_at"])
    return np.asarray(out)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ml = load_movielens()
    cfg = protocol.Config(max_epochs=args.epochs)
    settings = Settings(run=cfg)
    test = period_rows(ml, "test")
    t0 = time.perf_counter()
    _, trainer = from_dataset(args.model, ml, settings, args.device)
    print(f"static training: {time.perf_counter() - t0:.0f} s", flush=True)
    work = tempfile.mkdtemp(prefix="rec-sync-")
    start_dir = os.path.join(work, "start")
    save_start(start_dir, args.model, trainer, ml, settings)
    probs = part1_online(trainer, test, ml.label, cfg)
    out: dict[str, Any] = {"model": args.model, "speed": args.speed,
                           "sync_every": args.sync_every,
                           "part1_online_auc": metrics.auc(probs, ml.label[test])}  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "ANYCHIP_REC_TOKEN": "bench"}
    procs: list[subprocess.Popen[bytes]] = []
    with RedisServer() as redis:
        try:
            url = None
            if args.serve:
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                procs.append(subprocess.Popen(_cli(
                    "serve", "--model", start_dir, "--port", str(port), "--device", args.device,
                    "--redis", redis.url), env=env))  # fmt: skip
                _wait_http(url, procs[-1])
            plan = Plan(args.speed, args.candidates, args.limit, args.max_seconds,
                        0.5 if url else 0.0, linger=2 * args.sync_every + 5)  # fmt: skip
            count = len(plan.rows(ml, test))  # the trainer stops after the last of them
            follow_json = os.path.join(work, "follow.json")
            trainer_cmd = _cli(
                "train", "--follow", redis.url, "--model", start_dir, "--device", args.device,
                "--sync-every", str(args.sync_every), "--max-events", str(count),
                "--json", follow_json,
            )  # fmt: skip
            if url:
                trainer_cmd += ["--publish", url]
            follower = subprocess.Popen(trainer_cmd, env=env)
            procs.append(follower)
            log = open_log(redis.url)
            deadline = time.monotonic() + 600
            while log.length(UPDATES) == 0 and time.monotonic() < deadline:
                time.sleep(0.5)  # the trainer loads and publishes its first full update
            path = os.path.join(work, "replay.jsonl")
            with open(path, "w") as f:
                replayer = Replayer(ml, log, url, f, plan)  # url None: only feed the log
                sent = replayer.run(test)
                replayer.close()
            follower.wait(timeout=600)
            with open(follow_json) as fj:
                follow = json.load(fj)
            rows = test[:sent]
            prefix = probs[:sent]
            out.update({
                "events_replayed": sent, "part1_online_auc_prefix":
                metrics.auc(prefix, ml.label[rows]), "follower_online_auc": follow["online_auc"],
                "updates": follow["updates"], "full_updates": follow["full"],
            })  # fmt: skip
            delay = publish_delay(read_records(path))
            d = delay[~np.isnan(delay)]
            out["publish_delay_p50_s"] = float(np.percentile(d, 50))
            out["publish_delay_p99_s"] = float(np.percentile(d, 99))
            if url:
                out.update({f"served_{k}": v for k, v in report(path).items()})
            log.close()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                p.wait()
    return out


def _updates_for(start_dir: str, ml: Any, device: str, n: int, per: int) -> list[bytes]:
    """`n` real deltas of the follower from the starting model, one per `per` test events."""
    from anychip.rec.follow import Follower, OnlineFeatures, from_snapshot
    from anychip.rec.log import Event, MemoryLog

    model, config, _ = from_snapshot(start_dir, device)
    log = MemoryLog()
    first = len(protocol.split(len(ml)).train)
    for i in range(first, first + n * per):
        e = Event(int(ml.user[i]), int(ml.item[i]), int(ml.label[i]), int(ml.timestamp[i]),
                  time.time(), float(ml.rating[i]))  # fmt: skip
        log.add(EVENTS, e.fields())
    feats = OnlineFeatures(ml, first, bool(config["history"]), dict(config["id_rows"]))
    f = Follower(model, feats, log, None, batch_size=per, device=device, full_every=10**9)
    out = []
    for _ in range(n):
        done = 0
        while done < per:
            got = f.step(block_ms=0)
            assert got, "the log ran out of events"
            done += got
        out.append(wire.encode(f.publish()))
    return out


def loadtest_under_sync(args: argparse.Namespace, start_dir: str, ml: Any) -> dict[str, Any]:
    """p99 of `anychip rec loadtest` on the server alone and while real deltas are POSTed
    every `sync_every` seconds (from this process: the trainer runs elsewhere in
    production), interleaved, `--rounds` of each; the best p99 of each is kept."""
    import httpx

    rounds, secs = args.rounds, args.duration
    per_phase = max(1, int(secs // args.sync_every))
    updates = _updates_for(start_dir, ml, args.device, rounds * per_phase, 256)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "ANYCHIP_REC_TOKEN": "bench"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(_cli("serve", "--model", start_dir, "--port", str(port),
                                   "--device", args.device), env=env)  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {"steady": [], "sync": []}
    try:
        _wait_http(url, server)
        headers = {"Authorization": "Bearer bench", "Content-Type": "application/octet-stream"}
        pending = list(updates)
        for _ in range(rounds):
            for phase in ("steady", "sync"):
                out = os.path.join(tempfile.mkdtemp(), "load.json")
                load = subprocess.Popen(_cli(
                    "loadtest", "--url", url, "--qps", str(args.qps), "--duration", str(secs),
                    "--candidates", "100", "--json", out), env=env,
                    stdout=subprocess.DEVNULL)  # fmt: skip
                if phase == "sync":
                    t0 = time.monotonic()
                    for k in range(per_phase):
                        time.sleep(max(0.0, t0 + (k + 0.5) * args.sync_every - time.monotonic()))
                        r = httpx.post(url + "/update", content=pending.pop(0), headers=headers,
                                       timeout=60)  # fmt: skip
                        assert r.status_code == 200, r.text
                load.wait()
                with open(out) as f:
                    results[phase].append(json.load(f))
    finally:
        server.terminate()
        server.wait()
    steady = min(r["p99_ms"] for r in results["steady"])
    sync = min(r["p99_ms"] for r in results["sync"])
    return {"qps": args.qps, "steady_p99_ms": steady, "sync_p99_ms": sync,
            "sync_over_steady_p99": sync / steady,
            "errors": sum(sum(r["errors"].values()) if isinstance(r["errors"], dict)
                          else r["errors"] for v in results.values() for r in v)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="dcn")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--speed", type=float, default=3600.0)
    p.add_argument("--sync-every", type=float, default=10.0)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--serve", action="store_true", help="run `anychip rec serve` too")
    p.add_argument(
        "--loadtest",
        action="store_true",
        help="instead: p99 under load with and without a sync every --sync-every s",
    )
    p.add_argument("--qps", type=float, default=500.0)
    p.add_argument("--duration", type=float, default=30.0, help="seconds per load phase")
    p.add_argument("--rounds", type=int, default=2, help="phases of each kind, interleaved")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanup in `finally`
    if args.serve and importlib.util.find_spec("anychip.rec.serve") is None:
        p.error("--serve needs anychip.rec.serve (the prediction server)")
    if args.loadtest:
        ml = load_movielens()
        settings = Settings(run=protocol.Config(max_epochs=args.epochs))
        _, trainer = from_dataset(args.model, ml, settings, args.device)
        start_dir = os.path.join(tempfile.mkdtemp(prefix="rec-sync-"), "start")
        save_start(start_dir, args.model, trainer, ml, settings)
        print("static training done", flush=True)
        out = loadtest_under_sync(args, start_dir, ml)
    else:
        out = run(args)
    for k, v in out.items():
        print(f"{k:28s} {v:.4f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
