"""Shared fixtures: `device` runs a test once per device present on this machine."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import anychip as ac

# The simulated chip (`npu`) runs a test only where its module is listed here or the test
# is marked `npu` (the regression training tests: matrix products are slow to simulate):
# a functional simulator is slow, and not every kernel lowers to it yet (README, "Tests on
# npu"). ANYCHIP_TEST_NPU=all runs it everywhere; ANYCHIP_TEST_NPU_DEVICE=npu:edge (or
# npu:cube) runs those tests on that design instead of `npu`.
DEVICES = [d for d in ac.devices() if d != "npu"]
NPU = "npu" in ac.devices()
NPU_DEVICE = os.environ.get("ANYCHIP_TEST_NPU_DEVICE", "npu")
NPU_MODULES = {
    "test_autograd_0d",
    "test_broadcast_props",
    "test_colreduce",
    "test_creation",
    "test_elementwise",
    "test_embedding",
    "test_fuzz_graphs",
    "test_indexing",
    "test_indexing_props",
    "test_linalg",
    "test_long_chains",
    "test_losses",
    "test_movement",
    "test_nn",
    "test_norm",
    "test_op_sweep",
    "test_ops_extra",
    "test_parity",
    "test_profiler_devices",
    "test_reduce",
    "test_runtime_scalars",
    "test_small_answers",
    "test_sort",
    "test_sparse_grads",
    "test_stable_grads",
    "test_training_kernels",
    "test_uint64",
    "test_views",
}


def _npu_here(metafunc: pytest.Metafunc) -> bool:
    if not NPU:
        return False
    if os.environ.get("ANYCHIP_TEST_NPU") == "all":
        return True
    name = metafunc.module.__name__.rsplit(".", 1)[-1]
    return name in NPU_MODULES or metafunc.definition.get_closest_marker("npu") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On npu, a kernel the backend cannot lower yet raises the typed NpuUnsupported (never
    a host fallback, never a wrong value): such a test is reported as an expected failure
    naming what is missing; any other failure fails."""
    outcome = yield
    rep = outcome.get_result()
    spec = getattr(item, "callspec", None)
    if (
        rep.when == "call"
        and rep.failed
        and spec is not None
        and spec.params.get("device") == NPU_DEVICE
        and call.excinfo is not None
    ):
        from anychip.backends.npu import NpuUnsupported

        if call.excinfo.errisinstance(NpuUnsupported):
            rep.outcome = "skipped"
            rep.wasxfail = str(call.excinfo.value)[:160]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        npu = [NPU_DEVICE] if _npu_here(metafunc) else []
        metafunc.parametrize("device", DEVICES + npu)
