"""`anychip rec replay`: send a dataset's events to the log in time order at an accelerated
clock, asking the server to score each one just before it enters the log, and report what
users would have seen: the AUC of the served scores, the model versions, the freshness.

A run writes JSON lines (`--out`): one `event` record per replayed event (its row, user,
item, label, the served score and version, when it was asked, its log id and `sent_at`),
one `probe` record per extra request sent while waiting for the next event (its version
and time: they time a new version's arrival finely), and one `version` record per update
seen in `anychip:rec:updates` (its `events_upto`). `report(path)` reads them back.

>>> summary = report("replay.jsonl")   # doctest: +SKIP
>>> summary["auc"], summary["freshness_p50_s"]   # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from anychip.errors import ArgumentError
from anychip.rec import metrics, protocol, wire
from anychip.rec.log import EVENTS, UPDATES, Event, Log, Reader, id_key
from anychip.rec.movielens import MovieLens

PERIODS = ("test",)


@dataclass(frozen=True)
class Plan:
    """Which events to send and how fast: `speed` seconds of dataset time per second."""

    speed: float = 60.0
    candidates: int = 20  # the event's item plus candidates - 1 sampled items
    limit: int | None = None  # at most this many events
    max_seconds: float | None = None  # stop after this much real time
    probe_every: float = 0.5  # seconds between probes while waiting (0: none)
    seed: int = 0
    linger: float = 0.0  # seconds of probes after the last event (freshness of the last)

    def rows(self, ml: MovieLens, rows: np.ndarray) -> np.ndarray:
        """The rows this plan sends: the first `limit`, up to `max_seconds` of its clock."""
        rows = rows if self.limit is None else rows[: self.limit]
        if self.max_seconds is not None and len(rows):
            offset = (ml.timestamp[rows] - ml.timestamp[rows[0]]) / self.speed
            rows = rows[offset <= self.max_seconds]
        return rows


def period_rows(ml: MovieLens, period: str) -> np.ndarray:
    if period not in PERIODS:
        raise ArgumentError(f"rec replay: --from {period!r}; choose one of {PERIODS}")
    return protocol.split(len(ml)).test


class Replayer:
    """Sends events (rows of `ml`) to `log` and asks the server at `url` before each
    (with `url` None it only feeds the log)."""

    def __init__(
        self,
        ml: MovieLens,
        log: Log,
        url: str | None,
        out: TextIO,
        plan: Plan = Plan(),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        if plan.speed <= 0 or plan.candidates < 1:
            raise ArgumentError(
                f"rec replay: speed {plan.speed} must be > 0 and candidates {plan.candidates} >= 1"
            )
        self.ml, self.log, self.out, self.plan = ml, log, out, plan
        self.url = None if url is None else url.rstrip("/") + "/predict"
        self.client = httpx.Client(timeout=30.0)
        self.clock, self.sleep = clock, sleep
        self.rng = np.random.default_rng(plan.seed)
        self.updates = Reader(log, UPDATES, "0")
        self.errors: dict[str, int] = {}

    def _write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")

    def _ask(self, user: int, items: list[int], ts: int) -> tuple[dict[str, Any] | None, float]:
        import httpx

        if self.url is None:
            return None, self.clock()
        body = {"user_id": user, "candidates": items, "k": len(items),
                "context": {"timestamp": ts}}  # fmt: skip
        try:
            r = self.client.post(self.url, json=body)
        except httpx.TransportError as e:
            self.errors[type(e).__name__] = self.errors.get(type(e).__name__, 0) + 1
            return None, self.clock()
        if r.status_code != 200:
            self.errors[str(r.status_code)] = self.errors.get(str(r.status_code), 0) + 1
            return None, self.clock()
        return r.json(), self.clock()

    def _candidates(self, item: int) -> list[int]:
        n = self.ml.num_items - 1  # items 1..n
        k = min(self.plan.candidates - 1, n - 1)
        others = self.rng.choice(n - 1, size=k, replace=False) + 1  # 1..n-1
        others = np.where(others >= item, others + 1, others)  # skip the event's item
        return [item, *others.tolist()]

    def _versions(self) -> None:
        for _, fields in self.updates.read():
            u = wire.decode(fields[b"data"])
            self._write({"type": "version", "version": u.version, "kind": u.kind,
                         "events_upto": u.info.get("events_upto", ""),
                         "published_at": float(u.info.get("published_at", "nan"))})  # fmt: skip

    def _wait(self, until: float, user: int, item: int, ts: int) -> None:
        """Sleep until `until`, probing the server every `probe_every` seconds."""
        while True:
            now = self.clock()
            if now >= until:
                return
            if self.plan.probe_every <= 0:
                self.sleep(until - now)
                return
            self.sleep(min(self.plan.probe_every, until - now))
            if self.clock() < until:
                reply, t = self._ask(user, [item], ts)
                if reply is not None:
                    self._write({"type": "probe", "version": reply["version"], "at": t})
                self._versions()

    def run(self, rows: np.ndarray) -> int:
        """Replay `rows` (time-ordered); returns how many events were sent."""
        ml, plan = self.ml, self.plan
        rows = plan.rows(ml, rows)
        if len(rows) == 0:
            return 0
        base_ts, start = int(ml.timestamp[rows[0]]), self.clock()
        sent = 0
        for row in rows.tolist():
            user, item, ts = int(ml.user[row]), int(ml.item[row]), int(ml.timestamp[row])
            due = start + (ts - base_ts) / plan.speed
            if sent:
                self._wait(due, user, item, ts)
            asked = self.clock()
            reply, answered = self._ask(user, self._candidates(item), ts)
            score, version = None, None
            if reply is not None:
                version = reply["version"]
                score = float(dict(zip(reply["items"], reply["scores"]))[item])
            e = Event(user, item, int(ml.label[row]), ts, self.clock(), float(ml.rating[row]))
            entry = self.log.add(EVENTS, e.fields())
            self._write({"type": "event", "row": row, "user": user, "item": item,
                         "label": e.label, "score": score, "version": version,
                         "asked": asked, "answered": answered, "id": entry,
                         "sent_at": e.sent_at})  # fmt: skip
            self._versions()
            sent += 1
        if plan.linger > 0:
            self._wait(self.clock() + plan.linger, user, item, ts)
        return sent

    def close(self) -> None:
        self.client.close()


# --- the report ---------------------------------------------------------------------------
def freshness(
    events: Iterable[tuple[str, float]],
    responses: Iterable[tuple[float, int]],
    learned: dict[int, str],
) -> np.ndarray:
    """For each event (log id, sent_at): the delay to the first served response (time,
    version) whose version learned it (its `events_upto` is at or past the event's id);
    NaN where no response did. Versions unknown to `learned` learned nothing."""
    answered = sorted(responses)
    best: list[tuple[int, int]] = []  # prefix maximum of what the responses so far learned
    top = (-1, -1)
    for _, version in answered:
        upto = learned.get(int(version), "")
        if upto:
            top = max(top, id_key(upto))
        best.append(top)
    out = []
    for entry, sent_at in events:
        i = bisect_left(best, id_key(entry))  # `best` never decreases
        out.append(answered[i][0] - sent_at if i < len(best) else float("nan"))
    return np.asarray(out, np.float64)


def read(path: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"event": [], "probe": [], "version": []}
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise ArgumentError(f"rec replay --report: cannot read {path!r} ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ArgumentError(f"rec replay --report: {path!r} line {n}: not JSON ({e})") from None
        out.setdefault(record.get("type", ""), []).append(record)
    return out


def report(path: str) -> dict[str, Any]:
    """AUC of the served scores, versions seen and freshness of a replay's records."""
    r = read(path)
    scored = [e for e in r["event"] if e["score"] is not None]
    if not scored:
        raise ArgumentError(f"rec replay --report: {path!r} holds no served scores")
    scores = [e["score"] for e in scored]
    labels = [e["label"] for e in scored]
    labelled = 0 < sum(labels) < len(labels)
    responses = [(e["answered"], e["version"]) for e in scored]
    responses += [(p["at"], p["version"]) for p in r["probe"]]
    learned = {v["version"]: v["events_upto"] for v in r["version"]}
    fresh = freshness([(e["id"], e["sent_at"]) for e in r["event"]], responses, learned)
    measured = fresh[~np.isnan(fresh)]
    versions = sorted({e["version"] for e in scored})
    return {
        "events": len(r["event"]),
        "scored": len(scored),
        "auc": metrics.auc(scores, labels) if labelled else float("nan"),
        "versions_seen": len(versions),
        "first_version": versions[0],
        "last_version": versions[-1],
        "updates_published": len(r["version"]),
        "freshness_measured": len(measured),
        "freshness_p50_s": float(np.percentile(measured, 50)) if len(measured) else float("nan"),
        "freshness_p99_s": float(np.percentile(measured, 99)) if len(measured) else float("nan"),
    }


def main(args: Any) -> int:
    """`anychip rec replay --redis URL --url SERVER ...` (rec/cli.py's arguments)."""
    from anychip.rec.log import open_log
    from anychip.rec.train import load_dataset

    ml = load_dataset(args.dataset, args.path)
    rows = period_rows(ml, args.period)
    plan = Plan(args.speed, args.candidates, args.limit, args.max_seconds, args.probe_every,
                args.seed, args.linger)  # fmt: skip
    log = open_log(args.redis)
    span = (ml.timestamp[rows[-1]] - ml.timestamp[rows[0]]) / plan.speed
    print(f"rec replay: {len(rows)} events of {args.dataset}'s {args.period} period span "
          f"{span:,.0f} s at speed {plan.speed:g}; limit {plan.limit}, "
          f"max {plan.max_seconds} s")  # fmt: skip
    with open(args.out, "w") as out:
        r = Replayer(ml, log, args.url, out, plan)
        try:
            sent = r.run(rows)
        finally:
            r.close()
            log.close()
    print(f"sent {sent} events; errors {r.errors or 'none'}; records in {args.out}")
    return 0
