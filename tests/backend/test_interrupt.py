"""Ctrl-C stops a long kernel within a chunk, not at its end (issue 9, item 9): the cpu
backend runs long kernels as several calls (codegen/c_chunk.py), ref long numpy calls as
blocks (backends/ref/blocks.py), and Python raises KeyboardInterrupt between them; the
interrupted value is not recorded as computed and the process computes on correctly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")

# cpu: a lazy broadcast of 2^34 elements reduced to one number, minutes of work in one
# kernel and no buffer bigger than its two small inputs; ref: a 2048^3 matrix product
# (one einsum of ~40 s unblocked)
CHILD = """
import sys, time
import numpy as np
import anychip as ac
from anychip.runtime.device import get_backend
from anychip.runtime.realize import buffer_of, plan

device = sys.argv[1]

def graph(m, n):
    a = ac.arange(m, device=device).float().reshape(-1, 1)
    b = ac.arange(n, device=device).float().reshape(1, -1)
    if device == "ref":
        x = (a * b * 1e-6).sin()
        return (x @ x.t()).sum()
    return (a * b * 1e-6).sin().exp().sum()

def want(m, n):
    a = np.arange(m, dtype=np.float64).reshape(-1, 1)
    b = np.arange(n, dtype=np.float64).reshape(1, -1)
    if device == "ref":
        x = np.sin(a * b * 1e-6)
        return (x @ x.T).sum()
    return np.exp(np.sin(a * b * 1e-6)).sum()

t = graph(2048, 2048) if device == "ref" else graph(2**16, 2**18)
items = plan([t.node])  # compile first: the signal must land in the kernel, not the compiler
get_backend(device).compile_many([w.kernel for w in items if w.kernel is not None])
print("running", flush=True)
try:
    t.item()
    print("finished")
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
assert buffer_of(t.node) is None, "an interrupted value must not read as computed"
print("after", graph(300, 500).item(), want(300, 500), flush=True)
"""


@pytest.mark.slow
def test_ctrl_c_stops_a_long_kernel_within_a_chunk(device: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(SRC)}
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, device],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == b"running\n", p.stderr.read() if p.stderr else ""
        time.sleep(1.0)  # inside the kernel by now (compiled before "running")
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=600)  # a hang guard: unchunked it runs for minutes
    finally:
        p.kill()
    assert p.returncode == 0, err.decode()
    lines = out.decode().split("\n")
    word, stamp = lines[0].split()
    assert word == "interrupted"
    # generous: a chunk is tens of milliseconds; the unchunked kernel takes minutes
    assert float(stamp) - sent < 5.0
    _, got, want = lines[1].split()
    assert float(got) == pytest.approx(float(want), rel=1e-5)
