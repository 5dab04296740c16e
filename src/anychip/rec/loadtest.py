"""`anychip rec loadtest`: load a prediction server as MLPerf LoadGen's server scenario does.

Open loop: request i is scheduled at t_i, the arrival times of a Poisson process of rate
`qps` (exponential gaps, drawn before the run), and sent then whatever the earlier
requests are doing. Its latency runs from t_i, its scheduled time, to its answer, so a
request the generator sends late, or that waits for a free connection, counts that delay
too (no coordinated omission). Bodies are made before the run; the generator's own lag
(send time - scheduled time) and CPU use are reported, to show it is not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from anychip.errors import ArgumentError

PERCENTILES = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p999_ms": 99.9}


@dataclass(frozen=True)
class Config:
    url: str
    qps: float = 500.0
    duration: float = 30.0
    candidates: int = 100
    users: int = 943
    items: int = 1682
    k: int = 10
    concurrency: int = 512
    timeout: float = 5.0
    seed: int = 0
    client: str = "raw"  # or "httpx"


@dataclass
class Result:
    """Latencies (s) of answered requests, errors by kind, and the generator's lags."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)
    sent: int = 0
    wall: float = 0.0
    cpu: float = 0.0

    def figures(self, cfg: Config) -> dict[str, Any]:
        lat = np.array(self.latencies) * 1e3
        out: dict[str, Any] = {
            k: float(np.percentile(lat, q)) if lat.size else None for k, q in PERCENTILES.items()
        }
        lag = np.array(self.lags) * 1e3
        out.update({
            "qps": len(self.latencies) / self.wall if self.wall else 0.0,
            "offered_qps": cfg.qps, "requests": self.sent, "ok": len(self.latencies),
            "errors": dict(self.errors), "error_count": sum(self.errors.values()),
            "max_ms": float(lat.max()) if lat.size else None,
            "candidates": cfg.candidates, "duration_s": self.wall,
            "versions": {str(v): n for v, n in sorted(self.versions.items())},
            "generator": {
                "send_lag_p50_ms": float(np.percentile(lag, 50)) if lag.size else None,
                "send_lag_p99_ms": float(np.percentile(lag, 99)) if lag.size else None,
                "cpu_fraction": self.cpu / self.wall if self.wall else 0.0,
            },
        })  # fmt: skip
        return out


def bodies(cfg: Config, n: int) -> list[bytes]:
    """n request bodies: a uniform user, `candidates` distinct uniform items each."""
    rng = np.random.default_rng(cfg.seed + 1)
    users = rng.integers(1, cfg.users + 1, n)
    out = []
    for u in users:
        items = rng.choice(cfg.items, size=min(cfg.candidates, cfg.items), replace=False) + 1
        req = {"user_id": int(u), "candidates": items.tolist(), "k": cfg.k}
        out.append(json.dumps(req).encode())
    return out


def schedule(qps: float, duration: float, seed: int) -> np.ndarray:
    """Send times (s from the start) of a Poisson process of rate `qps` over `duration`."""
    rng = np.random.default_rng(seed)
    n = int(qps * duration * 1.2 + 10 * np.sqrt(qps * duration) + 10)
    t = np.cumsum(rng.exponential(1.0 / qps, n))
    return t[t < duration]


class Pool:
    """Keep-alive HTTP/1.1 connections to one server on asyncio streams, at most `size`
    open; a request waits for a free one (that wait counts in its latency). A minimal
    client: through httpx a request costs the generator ~18x the CPU (3.7 ms against 0.2
    ms measured here), enough to make it the bottleneck on a small machine."""

    def __init__(self, url: str, size: int) -> None:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ArgumentError(f"rec loadtest: --url must be http://host:port, got {url!r}")
        self.host, self.port, self.size = u.hostname, u.port or 80, size
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """(status, body) of one request. A kept-alive connection the server has closed
        meanwhile is dropped and the request sent again on a new one."""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        while True:
            reused, (r, w) = await self._connection()
            try:
                w.write(head + body)
                status_line = await r.readline()
                if not status_line and reused:  # closed while idle: try a new connection
                    w.close()
                    self._closed()
                    continue
                status = int(status_line.split(b" ", 2)[1])
                length, close = 0, False
                while (line := await r.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection":
                        close = value.strip().lower() == b"close"
                data = await r.readexactly(length)
            except BaseException:
                w.close()
                self._closed()
                raise
            if close:
                w.close()
                self._closed()
            else:
                self.idle.append((r, w))
                self._wake()
            return status, data

    async def _connection(self) -> tuple[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """(whether kept alive from before, a connection), waiting while `size` are busy."""
        while not self.idle and self.open >= self.size:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            await fut
        if self.idle:
            return True, self.idle.pop()
        self.open += 1
        try:
            return False, await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self._closed()
            raise

    def _closed(self) -> None:
        self.open -= 1
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def close(self) -> None:
        for _, w in self.idle:
            w.close()
        self.idle.clear()


class HttpxPool:
    """The same requests through httpx (`--client httpx`), to compare generator costs."""

    def __init__(self, url: str, size: int) -> None:
        import httpx

        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self.client = httpx.AsyncClient(base_url=url, limits=limits, timeout=None)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        import httpx

        try:
            r = await self.client.request(method, path, content=body,
                                          headers={"content-type": "application/json"})  # fmt: skip
        except httpx.HTTPError as e:
            raise OSError(f"{type(e).__name__}: {e}") from None
        return r.status_code, r.content

    async def close(self) -> None:
        await self.client.aclose()


async def _one(
    pool: Pool | HttpxPool, body: bytes, due: float, timeout: float, res: Result
) -> None:
    res.lags.append(time.perf_counter() - due)
    try:
        async with asyncio.timeout(timeout):
            status, data = await pool.request("POST", "/predict", body)
    except TimeoutError:
        res.errors["timeout"] += 1
        return
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
        res.errors[f"connection ({type(e).__name__})"] += 1
        return
    done = time.perf_counter()
    if status != 200:
        res.errors[f"http_{status}"] += 1
        return
    res.latencies.append(done - due)
    res.versions[int(json.loads(data)["version"])] += 1


async def run_load(cfg: Config) -> Result:
    """Offer the load and gather the answers (the whole run, on this event loop)."""
    times = schedule(cfg.qps, cfg.duration, cfg.seed)
    payload = bodies(cfg, len(times))
    res = Result(sent=len(times))
    pool = (HttpxPool if cfg.client == "httpx" else Pool)(cfg.url, cfg.concurrency)
    try:
        status, _ = await pool.request("GET", "/healthz")  # fails early if no server listens
        if status != 200:
            raise ArgumentError(f"rec loadtest: {cfg.url}/healthz answered {status}")
        tasks = []
        cpu0, start = time.process_time(), time.perf_counter() + 0.05
        for t, body in zip(times, payload):
            due = start + float(t)
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(_one(pool, body, due, cfg.timeout, res)))
        await asyncio.gather(*tasks)
        res.wall = time.perf_counter() - start
        res.cpu = time.process_time() - cpu0
    finally:
        await pool.close()
    return res


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--qps", type=float, default=500.0, help="mean arrival rate (default 500)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    p.add_argument("--candidates", type=int, default=100, help="candidates per request")
    p.add_argument("--users", type=int, default=943, help="user ids drawn from 1..N")
    p.add_argument("--items", type=int, default=1682, help="item ids drawn from 1..N")
    p.add_argument("--concurrency", type=int, default=512, help="most open connections")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds before a request fails")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client", default="raw", choices=["raw", "httpx"],
                   help="raw: a small asyncio client (default), or httpx")  # fmt: skip
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures as JSON")


def run(args: argparse.Namespace) -> int:
    if args.qps <= 0 or args.duration <= 0 or args.candidates < 1:
        raise ArgumentError("rec loadtest: --qps, --duration and --candidates must be positive")
    cfg = Config(args.url.rstrip("/"), args.qps, args.duration, args.candidates, args.users,
                 args.items, concurrency=args.concurrency, timeout=args.timeout,
                 seed=args.seed, client=args.client)  # fmt: skip
    print(f"anychip rec loadtest: {cfg.qps:g} req/s (Poisson) for {cfg.duration:g}s, "
          f"{cfg.candidates} candidates, against {cfg.url}", flush=True)  # fmt: skip
    fig = asyncio.run(run_load(cfg)).figures(cfg)
    print(report(fig))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fig, f, indent=2)
    return 0


def report(fig: dict[str, Any]) -> str:
    def ms(x: Any) -> str:
        return "-" if x is None else f"{x:.2f} ms"

    g = fig["generator"]
    rows = [
        ("requests", f"{fig['requests']} sent, {fig['ok']} ok"),
        ("achieved", f"{fig['qps']:.1f} req/s (offered {fig['offered_qps']:g})"),
        *((k[:-3], ms(fig[k])) for k in PERCENTILES),
        ("max", ms(fig["max_ms"])),
        ("errors", ", ".join(f"{k}: {n}" for k, n in fig["errors"].items()) or "none"),
        ("versions", ", ".join(f"{k}: {n}" for k, n in fig["versions"].items()) or "-"),
        ("generator", f"send lag p50 {ms(g['send_lag_p50_ms'])}, p99 "
                      f"{ms(g['send_lag_p99_ms'])}, cpu {100 * g['cpu_fraction']:.0f}%"),
    ]  # fmt: skip
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
