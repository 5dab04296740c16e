"""Serving latency as MLPerf's server scenario measures it, server and load generator on
this machine: `anychip rec serve` and `anychip rec loadtest` in two processes.

1. the target: 100 candidates a request at 500 requests/s (Poisson) for --duration
   seconds; p50/p90/p99/p99.9 from each request's scheduled send time, errors by kind;
2. the capacity: rising rates (--ladder) for --step seconds each; the highest with
   p99 <= 10 ms and no errors.

Prints the load average before and after each run (the machine is shared; a neighbour's
work shows in the tail) and writes every figure with --json.

Run: PYTHONPATH=src python bench/rec_serve.py [--model-dir DIR] [--duration 30]
     [--ladder 250,500,750,1000,1250,1500] [--step 10] [--json PATH]
Without --model-dir a DeepFM is trained on the first 20k MovieLens events (static, one
epoch: the model's quality does not change its cost) and saved in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

SRC = str(Path(__file__).resolve().parent.parent / "src")
TARGET_P99_MS = 10.0


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_WAIT_POLICY": "PASSIVE"}


def anychip(*args: str) -> list[str]:
    return [sys.executable, "-m", "anychip", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(folder: str) -> str:
    out = os.path.join(folder, "deepfm")
    cmd = anychip("rec", "train", "--model", "deepfm", "--protocol", "static", "--epochs", "1",
                  "--limit", "20000", "--device", "cpu", "--save", out)  # fmt: skip
    subprocess.run(cmd, env=_env(), check=True, stdout=subprocess.DEVNULL)
    return out


class Server:
    """`anychip rec serve` in a subprocess, up until `close`."""

    def __init__(self, model_dir: str, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = anychip("rec", "serve", "--model", model_dir, "--port", str(self.port), *extra)
        self.proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start (exit {self.proc.poll()})")
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def load(url: str, qps: float, duration: float, candidates: int) -> dict[str, Any]:
    """One loadtest run in its own process; its figures and the load averages around it."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        before = os.getloadavg()
        cmd = anychip("rec", "loadtest", "--url", url, "--qps", str(qps), "--duration",
                      str(duration), "--candidates", str(candidates), "--json", f.name)  # fmt: skip
        subprocess.run(cmd, env=_env(), check=True, stdout=subprocess.DEVNULL)
        fig: dict[str, Any] = json.loads(Path(f.name).read_text())
    fig["loadavg_before"], fig["loadavg_after"] = before[0], os.getloadavg()[0]
    return fig


def line(fig: dict[str, Any]) -> str:
    g = fig["generator"]
    errs = ", ".join(f"{k} {n}" for k, n in fig["errors"].items()) or "none"
    return (
        f"{fig['offered_qps']:>6g} req/s offered  {fig['qps']:7.1f} achieved  p50 "
        f"{fig['p50_ms']:6.2f}  p90 {fig['p90_ms']:6.2f}  p99 {fig['p99_ms']:7.2f}  p99.9 "
        f"{fig['p999_ms']:7.2f} ms  errors: {errs}  (generator lag p99 "
        f"{g['send_lag_p99_ms']:.2f} ms, cpu {100 * g['cpu_fraction']:.0f}%; load "
        f"{fig['loadavg_before']:.2f} -> {fig['loadavg_after']:.2f})"
    )


def ok(fig: dict[str, Any]) -> bool:
    return not fig["errors"] and fig["p99_ms"] is not None and fig["p99_ms"] <= TARGET_P99_MS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=None)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of the 500 req/s run")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--ladder", default="250,500,750,1000,1250,1500", help="rates to try")
    p.add_argument("--step", type=float, default=10.0, help="seconds at each ladder rate")
    p.add_argument("--server-args", default="", help="more `rec serve` options, space-separated")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or train(tmp)
        server = Server(model_dir, args.server_args.split())
        try:
            load(server.url, 200, 3, args.candidates)  # warm: connections, caches
            target = load(server.url, 500, args.duration, args.candidates)
            print("target ", line(target), flush=True)
            ladder = []
            for qps in (float(q) for q in args.ladder.split(",")):
                fig = load(server.url, qps, args.step, args.candidates)
                ladder.append(fig)
                print("ladder ", line(fig), flush=True)
                if fig["p99_ms"] is None or fig["p99_ms"] > 10 * TARGET_P99_MS:
                    break  # far past capacity: higher rates say nothing more
            metrics = httpx.get(f"{server.url}/metrics").text
        finally:
            server.close()
    best = max((f["offered_qps"] for f in ladder if ok(f)), default=None)
    print(f"500 req/s x {args.candidates} candidates: p99 {target['p99_ms']:.2f} ms, errors "
          f"{target['error_count']} -> {'met' if ok(target) else 'NOT met'} (p99 <= 10 ms, "
          "no errors)")  # fmt: skip
    print(f"highest rate tried with p99 <= 10 ms and no errors: {best} req/s")
    batches = [ln for ln in metrics.splitlines() if ln.startswith("anychip_rec_batch_requests_")]
    print("\n".join(b for b in batches if "_sum" in b or "_count" in b))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"target": target, "ladder": ladder, "capacity_qps": best}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
