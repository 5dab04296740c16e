"""Following the log (`--redis URL`). Updates: the trainer XADDs every update it
publishes to the Redis stream `anychip:rec:updates` (fields `version`, `kind`, `data`: the
wire bytes) before it POSTs it. At start the server applies the latest "full" update newer
than its snapshot and the deltas after it, in order; then a background thread follows the
stream (XREAD BLOCK) and applies what arrives, by the same version rules as `POST /update`,
so an update that came both ways is applied once (the second is stale and skipped).

Events: the same thread reads `anychip:rec:events` from its start (the snapshot's
behaviour state ends where the stream begins) and counts each event in the feature
store's behaviour state (`observe`), so a request's recent items and rates are the user's
and item's up to it, as the trainer's features are: not frozen at the snapshot.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from anychip.errors import ArgumentError
from anychip.rec.log import EVENTS, UPDATES, Event

BLOCK_MS = 1000  # how long one XREAD waits, so `stop` is seen within about a second

Apply = Callable[[bytes, str], int]  # (wire bytes, source) -> new version
Observe = Callable[[list[Event]], None]  # events, in log order, into the feature store


def _field(fields: dict[bytes, bytes], name: str) -> bytes:
    return fields.get(name.encode(), b"")


def plan(entries: list[tuple[bytes, dict[bytes, bytes]]], version: int) -> list[bytes]:
    """Of the stream's `entries` (oldest first), the ids to apply to catch up from
    `version`: the latest full update newer than `version` and every entry after it
    (deltas the version rules then accept in order), or, with no such full update,
    every entry newer than `version`."""
    start = 0
    for i, (_, f) in enumerate(entries):
        if _field(f, "kind") == b"full" and int(_field(f, "version") or -1) > version:
            start = i
    return [eid for eid, f in entries[start:] if int(_field(f, "version") or -1) > version]


class Follower:
    """Applies the updates log at `url` to a server (`apply`) and its events to the feature
    store (`observe`), now and as they grow."""

    def __init__(
        self, url: str, apply: Apply, version: Callable[[], int], observe: Observe | None = None
    ) -> None:
        import redis

        self.client: Any = redis.Redis.from_url(url)
        self.apply, self.version, self.observe = apply, version, observe
        self.last_id = b"0-0"  # the newest updates entry seen
        self.events_id = b"0-0"  # the newest events entry counted
        self.applied = 0
        self.observed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def catch_up(self) -> int:
        """Apply what the log holds beyond the served version; how many updates applied."""
        import redis

        try:
            entries = self.client.xrange(UPDATES, "-", "+")
        except redis.RedisError as e:
            raise ArgumentError(f"rec serve: cannot read {UPDATES} from --redis: {e}") from None
        if entries:
            self.last_id = entries[-1][0]
        todo = set(plan(entries, self.version()))
        n = 0
        for eid, fields in entries:
            if eid in todo and self._apply(fields):
                n += 1
        if self.observe is not None:
            try:
                self._observe(self.client.xrange(EVENTS, "-", "+"))
            except redis.RedisError as e:
                raise ArgumentError(f"rec serve: cannot read {EVENTS} from --redis: {e}") from None
        return n

    def _observe(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        if not entries or self.observe is None:
            return
        events = []
        for _, fields in entries:
            try:
                events.append(Event.parse(fields))
            except ArgumentError as e:  # a malformed event teaches nothing: skip it
                print(f"rec serve: {e}", file=sys.stderr)
        self.observe(events)
        self.events_id = entries[-1][0]
        self.observed += len(events)

    def _apply(self, fields: dict[bytes, bytes]) -> bool:
        try:
            self.apply(_field(fields, "data"), "redis")
        except ArgumentError as e:  # stale (came by POST first), or does not fit: skip it
            if int(_field(fields, "version") or -1) > self.version():
                print(f"rec serve: update from the log not applied: {e}", file=sys.stderr)
            return False
        self.applied += 1
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="rec-serve-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.client.close()

    def _follow(self) -> None:
        import redis

        wait = 0.1
        while not self._stop.is_set():
            try:
                streams = {UPDATES: self.last_id}
                if self.observe is not None:
                    streams[EVENTS] = self.events_id
                got = self.client.xread(streams, block=BLOCK_MS)
                wait = 0.1
            except redis.RedisError as e:  # the log is away: retry, backing off to 5 s
                print(f"rec serve: reading {UPDATES}: {e}", file=sys.stderr)
                self._stop.wait(wait)
                wait = min(wait * 2, 5.0)
                continue
            for stream, entries in got or []:
                if stream.decode() == EVENTS:
                    self._observe(entries)
                    continue
                for eid, fields in entries:
                    self.last_id = eid
                    self._apply(fields)
