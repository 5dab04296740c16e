"""Absurd sizes are rejected when a tensor is created, with a typed error naming the request
and the limit; a failed allocation is clean; Ctrl-C stops a run of kernels (issue 9, item 9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import anychip as ac
from anychip.runtime.device import MAX_NUMEL, get_backend

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def test_more_than_2_63_elements_is_an_error(device: str) -> None:
    with pytest.raises(ac.OutOfMemoryError, match=r"zeros .*\(4611686018427387904, 4\).*2\^63"):
        ac.zeros(2**62, 4, device=device)
    with pytest.raises(ac.OutOfMemoryError):
        ac.full((2**64,), 1.0, device=device)


def test_more_bytes_than_the_device_has_is_an_error(device: str) -> None:
    limit = get_backend(device).memory_limit()
    if limit is None:
        pytest.skip(f"{device} states no memory limit")
    n = limit // 4 + 1  # float32: one element more than fits
    with pytest.raises(ac.OutOfMemoryError, match=rf"ones .*{n * 4} bytes.*\({limit} bytes\)"):
        ac.ones(n, device=device)
    with pytest.raises(MemoryError):  # the built-in it mirrors
        ac.ones(2**40, device=device).sum()


def test_a_broadcast_past_int64_is_an_error_before_any_kernel(device: str) -> None:
    big = ac.ones(3, device=device).reshape(1, 3).expand(2**62, 3)
    with pytest.raises(ac.OutOfMemoryError, match="expand"):
        big.sum().item()
    assert MAX_NUMEL == 2**63 - 1


def test_a_failed_huge_allocation_is_clean() -> None:
    if "cpu" not in ac.devices():
        pytest.skip("the cpu backend's host memory")
    code = (
        "import gc, numpy as np\n"
        "from anychip.backends.cpu import memory\n"
        "from anychip.errors import OutOfMemoryError\n"
        "try:\n"
        "    memory.Memory(2**46, np.dtype(np.float32))\n"
        "except OutOfMemoryError as e:\n"
        "    print('typed:', e)\n"
        "gc.collect()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.abspath(SRC)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "typed: cpu: cannot allocate" in r.stdout
    assert "Exception ignored" not in r.stderr, r.stderr


def test_ctrl_c_stops_a_run_of_kernels_at_a_launch_boundary(device: str) -> None:
    code = (
        "import anychip as ac\n"
        f"x = ac.ones(1 << 16, device={device!r})\n"
        "print('running', flush=True)\n"
        "while True:\n"
        "    x = (x * 1.0001).realize()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.abspath(SRC)}
    p = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert p.stdout is not None and p.stdout.readline() == b"running\n"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)  # a hang guard, not a timing check
    finally:
        p.kill()
    assert p.returncode != 0
    assert b"KeyboardInterrupt" in err
