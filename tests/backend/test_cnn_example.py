"""examples/cnn_digits.py trains a conv-batchnorm-relu-pool CNN on scikit-learn's 8x8
digits to >= 97% test accuracy on the cpu device (issue 10's target)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import anychip as ac

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cnn_digits.py"


@pytest.mark.slow
def test_cnn_digits_reaches_97_percent() -> None:
    pytest.importorskip("sklearn", reason="the digits data ship inside scikit-learn")
    if "cpu" not in ac.devices():
        pytest.skip("needs the cpu device")
    if not hasattr(ac.nn, "BatchNorm2d"):  # arrives with the torch-habits branch
        pytest.skip("needs nn.BatchNorm2d")
    spec = importlib.util.spec_from_file_location("cnn_digits", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cnn_digits"] = mod
    spec.loader.exec_module(mod)
    assert mod.train("cpu", epochs=10) >= 0.97
