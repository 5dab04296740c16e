"""Shared fixtures: `device` runs a test once per device present on this machine."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import anychip as ac

# The simulated chip (`npu`) runs a test only where its module is listed here or the test
# is marked `npu`: a functional simulator is slow, and not every op lowers to it yet
# (README, "Tests on npu"). ANYCHIP_TEST_NPU=all runs it everywhere.
DEVICES = [d for d in ac.devices() if d != "npu"]
NPU = "npu" in ac.devices()
NPU_MODULES = {
    "test_fuzz_graphs",
}


def _npu_here(metafunc: pytest.Metafunc) -> bool:
    if not NPU:
        return False
    if os.environ.get("ANYCHIP_TEST_NPU") == "all":
        return True
    name = metafunc.module.__name__.rsplit(".", 1)[-1]
    return name in NPU_MODULES or metafunc.definition.get_closest_marker("npu") is not None


# device-parametrised tests of those modules whose kernels the npu cannot lower yet: they
# must raise the typed NpuUnsupported (never a host fallback, never a wrong value)
NPU_UNSUPPORTED = {
    "test_random_graph_matches_float64_numpy[npu-14]",  # scatter-add
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from anychip.backends.npu import NpuUnsupported

    for item in items:
        if item.name in NPU_UNSUPPORTED:
            item.add_marker(pytest.mark.xfail(raises=NpuUnsupported, strict=True))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES + (["npu"] if _npu_here(metafunc) else []))
