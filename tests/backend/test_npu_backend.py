"""The npu device: names, simulated device memory, the lowering of kernels to npu
instructions (values against numpy / torch at float32 tolerances), launch arguments,
the program cache, launch statistics and the simulator's hazard checks."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import anychip as ac
import anychip.nn.functional as F
from anychip.backends.npu import NpuUnsupported
from anychip.npu.config import get_config
from anychip.npu.errors import RaceError
from anychip.npu.isa import Unit, WaitFlag
from anychip.runtime.device import get_backend

pytestmark = pytest.mark.skipif("npu" not in ac.devices(), reason="npu backend not present")

DESIGNS = ["npu", "npu:edge", "npu:cube"]
RTOL, ATOL = 1e-5, 1e-6  # the cpu's float32 tolerances (tests/helpers.py)
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 3e38, 1e-45], np.float32)


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _close(got: ac.Tensor, want: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
    g = got.numpy()
    assert g.shape == want.shape and g.dtype == want.dtype, (g.shape, g.dtype, want.shape)
    np.testing.assert_allclose(g, want, rtol=rtol, atol=atol, equal_nan=True)


# ---- devices ---------------------------------------------------------------------------
def test_devices_list_npu_and_name_variants() -> None:
    assert "npu" in ac.devices()
    assert ac.ones(2, device="npu:datacenter").device == "npu"  # the default design
    assert ac.ones(2, device="npu:edge").device == "npu:edge"
    assert get_backend("npu:cube").config.name == "cube"
    assert get_backend("npu").config.name == "datacenter"
    with pytest.raises(ac.DeviceError, match="no npu design 'nosuch'"):
        ac.ones(2, device="npu:nosuch")
    with pytest.raises(ac.DeviceError, match="has no variants"):
        ac.ones(2, device="cpu:edge")


def test_a_design_file_is_a_device(tmp_path: Path) -> None:
    path = str(tmp_path / "tiny.toml")
    get_config("edge").replace(cores=2, dram_size=1 << 20).save(path)
    dev = f"npu:{path}"
    x = ac.tensor(_rand(300), device=dev)
    assert x.device == f"npu:{os.path.realpath(path)}"
    be = get_backend(x.device)
    assert be.config.cores == 2 and be.config.dram_size == 1 << 20
    _close(x * 2 + 1, _rand(300) * 2 + 1)


def test_device_memory_is_the_designs_and_overflow_is_typed(tmp_path: Path) -> None:
    path = str(tmp_path / "small.toml")
    get_config("edge").replace(dram_size=1 << 20).save(path)
    dev = f"npu:{path}"
    with pytest.raises(ac.OutOfMemoryError, match=r"1048576 bytes"):
        ac.zeros(300_000, device=dev)  # 1.2 MB > 1 MiB: one tensor past the design
    a = ac.zeros(150_000, device=dev).realize()  # 600 KB
    with pytest.raises(ac.OutOfMemoryError, match=r"needs 600000 bytes .* in use"):
        ac.zeros(150_000, device=dev).realize()
    del a  # its block goes back to the free list
    b = ac.zeros(150_000, device=dev).realize()
    assert b.numpy().sum() == 0


def test_to_and_from_npu_keep_values() -> None:
    x = _rand(5, 7)
    t = ac.tensor(x).to("npu")
    assert t.device == "npu"
    back = t.to("cpu" if "cpu" in ac.devices() else "ref")
    np.testing.assert_array_equal(back.numpy(), x)
    m = ac.tensor(np.array([0, 3, 255], np.uint8).view(bool)).to("npu:edge")
    assert m.numpy().view(np.uint8).tolist() == [0, 1, 1]  # bools stay canonical bytes


def test_anychip_device_env_selects_npu() -> None:
    code = "import anychip as ac; print(ac.ones(2).device, (ac.ones(2) * 3).numpy().tolist())"
    env = {**os.environ, "ANYCHIP_DEVICE": "npu:cube", "PYTHONPATH": "src"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "npu:cube [3.0, 3.0]"


# ---- values ----------------------------------------------------------------------------
@pytest.mark.parametrize("design", DESIGNS)
def test_elementwise_broadcast_and_views(design: str) -> None:
    x, y, z = _rand(37, 53), _rand(53, seed=1), _rand(53, 37, seed=2)
    a, b, c = (ac.tensor(v, device=design) for v in (x, y, z))
    _close(a * b + 1.5, x * y + np.float32(1.5))
    _close((a - b) / (b * b + 1), (x - y) / (y * y + 1))
    _close(a + c.T, x + z.T)  # a transposed read: a strided DMA
    _close(a[:, 3:40:2].exp(), np.exp(x[:, 3:40:2]), rtol=2e-6)
    _close(a.flip(0), x[::-1])  # a negative stride: the element gather
    _close(ac.cat([a, a * 2], 0), np.concatenate([x, x * 2], 0))  # padded loads
    _close(
        a.reshape(37, 53, 1).permute(2, 1, 0).contiguous(), x.reshape(37, 53, 1).transpose(2, 1, 0)
    )
    _close(ac.maximum(a, b), np.maximum(x, y))
    _close((a * a + 1).sqrt().log(), np.log(np.sqrt(x * x + 1)), rtol=2e-6)


@pytest.mark.parametrize("design", DESIGNS)
def test_compare_and_select_are_exact_on_special_values(design: str) -> None:
    x = np.repeat(SPECIAL, SPECIAL.size)
    y = np.tile(SPECIAL, SPECIAL.size)
    a, b = ac.tensor(x, device=design), ac.tensor(y, device=design)
    np.testing.assert_array_equal((a < b).numpy(), x < y)
    np.testing.assert_array_equal((a == b).numpy(), x == y)
    np.testing.assert_array_equal((a <= b).numpy(), x <= y)
    np.testing.assert_array_equal(ac.where(a < b, a, b).numpy().view(np.int32),
                                  np.where(x < y, x, y).view(np.int32))  # fmt: skip
    np.testing.assert_array_equal(a.relu().numpy(), torch.relu(torch.from_numpy(x)).numpy())
    np.testing.assert_array_equal(
        ((a > 0) & ~(b > 0) | (a == 0)).numpy(), (x > 0) & ~(y > 0) | (x == 0)
    )
    np.testing.assert_array_equal((a != b).float().numpy(), (x != y).astype(np.float32))
    np.testing.assert_array_equal(a.bool().numpy(), x.astype(bool))


@pytest.mark.parametrize("design", DESIGNS)
def test_reductions_across_tiles(design: str) -> None:
    x = _rand(6, 1000)
    a = ac.tensor(x, device=design)
    x64 = x.astype(np.float64)
    _close(a.sum(1), x64.sum(1).astype(np.float32))
    _close(a.T.contiguous().sum(0), x64.sum(1).astype(np.float32))  # a column reduction
    _close(a.amax(1), x.max(1))
    _close(a.amin(0), x.min(0))
    _close(a.mean(1, keepdim=True), x64.mean(1, keepdims=True).astype(np.float32))
    big = _rand(70_001, seed=3)  # one sum over many steps: partials folded once per 64
    got = ac.tensor(big, device=design).sum().item()
    assert (
        abs(got - big.astype(np.float64).sum()) <= 4 * np.finfo(np.float32).eps * np.abs(big).sum()
    )


@pytest.mark.parametrize("design", DESIGNS)
def test_row_kernels_match_torch(design: str) -> None:
    x = _rand(9, 300) * 4
    a, t = ac.tensor(x, device=design), torch.from_numpy(x)
    _close(a.softmax(-1), torch.softmax(t, -1).numpy(), rtol=2e-6)
    _close(
        ac.nn.functional.layer_norm(a, (300,)),
        torch.nn.functional.layer_norm(t, (300,)).numpy(),
        rtol=2e-5,
        atol=2e-6,
    )
    _close(a.var(1), t.var(1).numpy(), rtol=2e-6)


@pytest.mark.parametrize("design", DESIGNS)
def test_contraction_on_the_vector_unit(design: str) -> None:
    x, y = _rand(17, 33), _rand(33, 9, seed=1)
    want = (x.astype(np.float64) @ y.astype(np.float64)).astype(np.float32)
    _close(ac.tensor(x, device=design) @ ac.tensor(y, device=design), want, rtol=1e-5, atol=1e-5)


def test_matmul_runs_on_the_matrix_unit_at_float32_accuracy() -> None:
    x, y = _rand(64, 96), _rand(96, 48, seed=1)
    want = (x.astype(np.float64) @ y.astype(np.float64)).astype(np.float32)
    _close(ac.tensor(x, device="npu") @ ac.tensor(y, device="npu"), want, rtol=1e-5, atol=1e-5)
    st = get_backend("npu").launch_stats()
    assert st is not None and st["units"]["matrix"] > 0  # codegen/npu_gemm, not the vectors
    assert st["flops"] >= 2 * 64 * 96 * 48


@pytest.fixture
def restore_precision():
    before = ac.get_float32_matmul_precision()
    yield
    ac.set_float32_matmul_precision(before)


def test_float32_matmul_on_edge_runs_float16_pieces_at_each_precision(restore_precision) -> None:
    """npu:edge's matrix unit has no bf16: float32 runs as scaled float16 pieces on it, at
    each precision (the program cache keys on the setting), against float64: "highest"
    within the cpu's float32 tolerances, "medium" at float16's rounding."""
    x, y = _rand(45, 70), _rand(70, 33, seed=1)
    x[3] *= 1e6  # one row far larger than the rest
    ref = x.astype(np.float64) @ y.astype(np.float64)
    s = np.abs(x.astype(np.float64)) @ np.abs(y.astype(np.float64))
    errs = {}
    for p in ("highest", "high", "medium"):
        ac.set_float32_matmul_precision(p)
        got = (ac.tensor(x, device="npu:edge") @ ac.tensor(y, device="npu:edge")).numpy()
        st = get_backend("npu:edge").launch_stats()
        assert st is not None and st["units"]["matrix"] > 0
        errs[p] = float(np.max(np.abs(got - ref) / s))
        if p == "highest":
            np.testing.assert_allclose(got, ref.astype(np.float32), rtol=RTOL, atol=ATOL)
    assert errs["highest"] < 2.0**-20 and errs["high"] < 2.0**-19
    assert 2.0**-16 < errs["medium"] < 2.0**-10


@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_half_matmul_is_one_matrix_kernel_rounding_on_chip(dt: str) -> None:
    # f32 accumulation, one rounding to the half dtype in the GEMM's store: torch's result
    x, y = _rand(64, 96), _rand(96, 48, seed=1)
    tx, ty = (torch.tensor(v).to(getattr(torch, dt)) for v in (x, y))
    want = (tx.float() @ ty.float()).to(getattr(torch, dt)).float().numpy()
    a, b = (ac.tensor(t.float().numpy(), device="npu").to(getattr(ac, dt)) for t in (tx, ty))
    a.realize(), b.realize()
    with ac.profile() as prof:
        out = (a @ b).realize()
    assert [e.name for e in prof.events] == ["contraction"]  # no separate cast kernel
    assert prof.events[0].units["matrix"] > 0
    got = out.to(ac.float32).numpy()
    np.testing.assert_allclose(got, want, rtol=2**-8, atol=1e-3)


def test_int32_and_bool_tensors() -> None:
    x = np.arange(-50, 50, dtype=np.int32) * 40_000_000  # wraps when doubled
    a = ac.tensor(x, device="npu")
    np.testing.assert_array_equal((a + a).numpy(), x + x)
    np.testing.assert_array_equal((a == a * 1).numpy(), np.ones(100, bool))
    np.testing.assert_array_equal(ac.maximum(a, -a).numpy(), np.maximum(x, -x))
    m = ac.tensor(x > 0, device="npu")
    np.testing.assert_array_equal((m ^ (a == 0)).numpy(), (x > 0) ^ (x == 0))


# ---- compile, launch -------------------------------------------------------------------
def test_runtime_scalars_are_launch_arguments() -> None:
    be = get_backend("npu:edge")
    x = _rand(1000)
    a = ac.tensor(x, device="npu:edge")
    (a * 0.5 + 3.0).numpy()  # both launch arguments (0 and 1 would be structure)
    before = len(be.programs)
    for lr in (0.1, -3.0, 7.25):
        _close(a * lr + 2.0, x * np.float32(lr) + np.float32(2.0))
    assert len(be.programs) == before  # new values, the same program


def test_unsupported_ops_raise_naming_op_and_device(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.toml"  # an 8 KiB `ub`: not even a 16-key block of a long sort
    get_config("cube").replace(**{"ub.size": 8 * 1024}).save(tiny)
    a = ac.tensor(_rand(2, 2000), device=f"npu:{tiny}")
    with pytest.raises(NpuUnsupported, match=r"sort_2x2000 does not fit ub .*tiny.toml'"):
        a.argsort().numpy()  # a typed error, no fallback


def test_gathers_and_scatter_adds_match_torch() -> None:
    w = _rand(10, 4)
    ids = np.array([3, 0, 9, 3, -1, 3])
    a = ac.tensor(w, device="npu", requires_grad=True)
    t = torch.from_numpy(w).requires_grad_()
    g = _rand(6, 4, seed=5)
    (a[ac.tensor(ids, device="npu")] * ac.tensor(g, device="npu")).sum().backward()
    (t[torch.from_numpy(ids)] * torch.from_numpy(g)).sum().backward()
    _close(a[ac.tensor(ids, device="npu")], w[ids])  # gather by indices read from memory
    assert a.grad is not None and t.grad is not None
    _close(a.grad, t.grad.numpy())  # scatter-add: repeated ids accumulate


def test_float64_int64_and_math_run_natively() -> None:
    x = np.linspace(-3, 3, 50)
    a = ac.tensor(x, device="npu")  # float64: the design's f64 vector path
    np.testing.assert_allclose(
        (a.sin() * a.exp() + 1).numpy(), np.sin(x) * np.exp(x) + 1, rtol=1e-12
    )
    np.testing.assert_array_equal(a.floor().numpy(), np.floor(x))
    n = np.arange(-20, 20, dtype=np.int64) * 3_000_000_000  # beyond int32
    i = ac.tensor(n, device="npu")
    np.testing.assert_array_equal((i // 7 + i % 5).numpy(), n // 7 + n % 5)


def test_programs_are_cached_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import anychip.backends.npu as npu_backend

    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path))
    be = get_backend("npu:edge")
    a = ac.tensor(_rand(64), device="npu:edge")
    _close((a * 3.0).exp(), np.exp(_rand(64) * 3), rtol=2e-6)
    assert list((tmp_path / "npu").glob("npu-*.so")), "no entry written"
    monkeypatch.setattr(be, "programs", {})

    def no_lowering(*args: object) -> None:
        raise AssertionError("lowered again instead of reading the disk cache")

    monkeypatch.setattr(npu_backend, "lower_ir", no_lowering)
    _close((a * 4.0).exp(), np.exp(_rand(64) * 4), rtol=2e-6)


def test_launch_stats_count_device_memory_bytes() -> None:
    be = get_backend("npu")
    n = 1 << 14
    a = ac.tensor(_rand(n), device="npu")
    (a * 2.0).realize()
    st = be.launch_stats()
    assert st is not None
    # n loads and n stores of 4 bytes, and one 8-byte launch argument (the 2.0)
    assert st["bytes"] == 8 * n + 8
    floor = st["bytes"] / be.config.dram_bytes_per_s  # no program beats the roofline
    assert st["time_s"] >= floor
    assert set(st["units"]) >= {"dma_in", "dma_out", "vector"}
    assert all(0.0 <= f <= 1.0 for f in st["units"].values())


@pytest.mark.parametrize("op", ["softmax", "layer_norm"])
def test_row_kernels_read_their_rows_once(op: str) -> None:
    """The row is read by three inner loops (max/mean, sum/variance, output) but kept in
    `ub` for the group: device memory sees each element loaded once and stored once."""
    be = get_backend("npu")
    rows, cols = 256, 1024
    x = np.random.default_rng(1).standard_normal((rows, cols)).astype(np.float32)
    x64 = x.astype(np.float64)
    t = ac.tensor(x, device="npu")
    if op == "softmax":
        got = t.softmax(-1).numpy()
        e = np.exp(x64 - x64.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
    else:
        got = F.layer_norm(t, (cols,)).numpy()
        want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    st = be.launch_stats()
    assert st is not None
    extra = st["bytes"] - 2 * x.nbytes  # launch arguments; reading x again: 1 MiB more
    assert 0 <= extra <= 256, st["bytes"]


def test_hazard_checks_are_on_at_launch() -> None:
    be = get_backend("npu:edge")
    a = ac.tensor(_rand(100), device="npu:edge")
    from anychip.runtime.realize import plan

    (w,) = [w for w in plan([(a * 2.0 + 3.0).node]) if w.kernel is not None]
    comp = be.compile(w.kernel)
    waits = [i for i, x in enumerate(comp.cores[0]) if x == WaitFlag(Unit.DMA_IN, Unit.VECTOR, 0)]
    broken = dataclasses.replace(
        comp, cores=(tuple(x for i, x in enumerate(comp.cores[0]) if i != waits[0]),)
    )
    with pytest.raises(RaceError, match="no flag or barrier between dma_in and vector"):
        be.launch(broken, w.out, list(w.ins), (2.0, 3.0))


def test_debug_prints_simulated_time() -> None:
    code = "import anychip as ac; (ac.ones(64, device='npu:edge') * 2).numpy()"
    env = {**os.environ, "ANYCHIP_DEBUG": "1", "PYTHONPATH": "src"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "simulated" in r.stdout and " us" in r.stdout and "vector" in r.stdout
