"""The default device: cpu where available, else ref; ANYCHIP_DEVICE is checked every time."""

from __future__ import annotations

import os
import subprocess
import sys

import anychip as ac

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "ANYCHIP_DEVICE"}
    full["PYTHONPATH"] = os.path.abspath(SRC)
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120
    )


def test_default_is_cpu_where_available() -> None:
    r = run("import anychip as ac; print(ac.ones(2).device)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("cpu" if "cpu" in ac.devices() else "ref")


def test_env_and_set_default_device_choose_another() -> None:
    code = (
        "import anychip as ac; a = ac.ones(2).device; ac.set_default_device('cpu' if "
        "'cpu' in ac.devices() else 'ref'); print(a, ac.ones(2).device, "
        "ac.ones(2, device='ref').device)"
    )
    r = run(code, ANYCHIP_DEVICE="ref")
    assert r.returncode == 0, r.stderr
    other = "cpu" if "cpu" in ac.devices() else "ref"
    assert r.stdout.split() == ["ref", other, "ref"]


def test_a_bad_anychip_device_raises_every_time() -> None:
    code = (
        "import anychip as ac\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        ac.zeros(2)\n"
        "        print('made')\n"
        "    except ac.DeviceError as e:\n"
        "        print('DeviceError', e)\n"
    )
    r = run(code, ANYCHIP_DEVICE="bogus")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("DeviceError") for line in lines), lines
    assert "ANYCHIP_DEVICE" in lines[0] and "'bogus'" in lines[0]
