"""The GEMM autotuner: the per-machine cache, `tuned_tiling`, the search, `anychip tune`.

No wall-clock assertions: searches with real timing only check that a valid candidate won."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest

from anychip.cli import main
from anychip.codegen.gemm import (
    GemmSpec,
    default_tiling,
    fold_broadcast_batch,
    gemm_source,
    host_info,
)
from anychip.errors import CompileError
from anychip.runtime import tune, tune_search
from anychip.runtime.tune import TileChoice, TuneResult

HAVE_CC = shutil.which("cc") is not None
SPEC = GemmSpec(1, 1000, 1000, 1000, "float32")  # class float32 1x1024x1024x1024 r,r,r


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ANYCHIP_TUNE", raising=False)
    tune._MEMO.clear()
    return tmp_path


def odd_choice(spec: GemmSpec) -> TileChoice:
    """A valid choice that differs from the default in every knob."""
    lanes = host_info().vec_bytes // spec.acc_dtype.itemsize
    return TileChoice(mr=3, nr=lanes, vec_bytes=host_info().vec_bytes, kc=40, unroll=3)


def fake_result(spec: GemmSpec) -> TuneResult:
    c = odd_choice(spec)
    return TuneResult(tune.shape_class(spec), c, c.tiling(spec), 10.0, 20.0)


# ------------------------------------------------------------------ the cache


def test_cache_round_trips(cache_dir):
    path = tune.save(fake_result(SPEC))
    assert path.parent.parent == cache_dir and path.name.startswith("gemm-")
    data = json.loads(path.read_text())
    assert data["machine"] == tune.machine_fingerprint()
    assert set(data["machine"]) == {"cpu", "cores", "compiler", "vector"}
    assert tune.cached_choice(SPEC) == odd_choice(SPEC)


def test_tuned_tiling_picked_up_for_the_whole_class():
    assert tune.tuned_tiling(SPEC) == default_tiling(SPEC)  # nothing cached yet
    tune.save(fake_result(SPEC))
    t = tune.tuned_tiling(SPEC)
    assert (t.mr, t.kc, t.unroll) == (3, 40, 3) and t.mc % 3 == 0
    # another size in the same class gets blocks sized for itself
    t2 = tune.tuned_tiling(GemmSpec(1, 600, 700, 800, "float32"))
    assert (t2.mr, t2.kc, t2.unroll) == (3, 40, 3) and t2.mc <= 603
    # another layout or dtype is another class
    spec_t = GemmSpec(1, 1000, 1000, 1000, "float32", b_strides=(0, 1, 1000))
    assert tune.tuned_tiling(spec_t) == default_tiling(spec_t)
    spec64 = GemmSpec(1, 1000, 1000, 1000, "float64")
    assert tune.tuned_tiling(spec64) == default_tiling(spec64)


def test_shape_class_keys():
    assert tune.shape_class(SPEC) == "float32->float32 1x1024x1024x1024 r,r,r"
    half = GemmSpec(3, 7, 33, 129, "bfloat16", "float32", a_strides=(0, 1, 7))
    assert tune.shape_class(half) == "bfloat16->float32 4x8x64x256 c0,r,r"
    # a broadcast B over a row-stacked batch is one taller GEMM, as gemm_source renders it
    folded = GemmSpec(4, 100, 50, 60, "float32", b_strides=(0, 50, 1))
    assert tune.shape_class(folded) == "float32->float32 1x512x64x64 r,r,r"


def write_cache(data: object) -> None:
    path = tune.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "unreadable"),
        ({"version": 999, "entries": {}}, "not a version-1"),
        ({"version": 1, "machine": {"cpu": "another"}, "entries": {}}, "another machine"),
        (["a", "list"], "not a version-1"),
    ],
    ids=["corrupt", "version", "foreign", "list"],
)
def test_bad_cache_file_is_ignored_with_a_warning(content, message):
    write_cache(content)
    with pytest.warns(RuntimeWarning, match=message):
        assert tune.tuned_tiling(SPEC) == default_tiling(SPEC)
    tune.save(fake_result(SPEC))  # saving replaces the bad file
    assert tune.tuned_tiling(SPEC).kc == 40


def test_bad_entry_is_ignored_with_a_warning():
    entry = {"choice": {"mr": -1, "nr": 16, "vec_bytes": 64}}
    key = tune.shape_class(SPEC)
    write_cache({"version": 1, "machine": tune.machine_fingerprint(), "entries": {key: entry}})
    with pytest.warns(RuntimeWarning, match="bad entry"):
        assert tune.tuned_tiling(SPEC) == default_tiling(SPEC)


def test_tune_env_searches_once_and_caches(monkeypatch):
    calls = []

    def fake_tune_spec(spec):
        calls.append(spec)
        return fake_result(spec)

    monkeypatch.setattr(tune, "tune_spec", fake_tune_spec)
    monkeypatch.setenv("ANYCHIP_TUNE", "1")
    assert tune.tuned_tiling(SPEC).kc == 40
    assert tune.tuned_tiling(GemmSpec(1, 1023, 1000, 1000, "float32")).kc == 40
    assert len(calls) == 1  # the second spec shares the class: read from the cache
    assert json.loads(tune.cache_path().read_text())["entries"][tune.shape_class(SPEC)]
    empty = GemmSpec(1, 0, 4, 5, "float32")
    assert tune.tuned_tiling(empty) == default_tiling(empty) and len(calls) == 1


# ------------------------------------------------------------------ the search


def test_search_walks_the_stages_to_the_minimum():
    # a cost with one best value per knob: each stage should settle its own knob
    spec = GemmSpec(1, 300, 300, 300, "float32")
    lanes = host_info().vec_bytes // 4

    def cost(s: GemmSpec, t) -> float:
        return (t.nr != 2 * lanes) + (t.kc != 256) + (t.unroll != 8) + 1.0

    r = tune.search(spec, time_fn=cost)
    assert (r.tiling.nr, r.tiling.kc, r.tiling.unroll) == (2 * lanes, 256, 8)
    assert r.tuned_gflops == pytest.approx(spec.flops / 1e9)


def test_search_skips_candidates_that_fail_to_build():
    spec = GemmSpec(1, 30, 40, 50, "float32")
    base = tune_search.default_choice(spec)
    choices = [base, replace(base, unroll=1), replace(base, unroll=2)]

    def time_fn(s, t):
        if t.unroll == 1:
            raise CompileError("pretend this one failed")
        return 1.0 / t.unroll

    assert tune.search(spec, choices, time_fn).choice.unroll == 4
    assert tune.search(spec, choices[1:2], time_fn).choice == base  # the default is kept

    def broken(s, t):
        raise CompileError("no compiler today")

    with pytest.raises(CompileError, match="no candidate"):
        tune.search(spec, choices, broken)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_search_times_real_kernels_on_a_tiny_shape(tmp_path):
    spec = GemmSpec(2, 9, 20, 7, "float16", "float32", b_strides=(0, 1, 7))
    base = tune_search.default_choice(fold_broadcast_batch(spec))  # an (18, 7) @ (7, 20)
    choices = [base, replace(base, mr=2, unroll=1)]
    r = tune.search(spec, choices)
    assert r.choice in choices and r.tuned_gflops > 0 and r.default_gflops > 0
    # the chosen tiling computes the right product
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (2, 9, 7)).astype(np.float16)
    w = rng.uniform(-1, 1, (20, 7)).astype(np.float16)  # b = w.T, batch-broadcast
    out = np.empty((2, 9, 20), np.float32)
    fn = tune_search.build(gemm_source(spec, r.tiling, "mm"), "mm", tmp_path)
    fn(out.ctypes.data, a.ctypes.data, w.ctypes.data)
    ref = a.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_tune_spec_runs_the_staged_search_in_a_child_process():
    spec = GemmSpec(1, 5, 17, 3, "float32")
    r = tune.tune_spec(spec)
    assert r.shape_class == tune.shape_class(spec)
    assert r.tiling == r.choice.tiling(spec) and math.isfinite(r.tuned_gflops)
    assert r.tuned_gflops > 0 and r.default_gflops > 0


# ------------------------------------------------------------------ `anychip tune`


def test_cli_tune_prints_a_table_and_saves(monkeypatch, capsys):
    monkeypatch.setattr(tune, "tune_spec", fake_result)
    assert main(["tune", "--sizes", "64", "--mlp", "8", "16", "32"]) == 0
    out = capsys.readouterr().out
    assert "default GFLOP/s" in out and "tuned GFLOP/s" in out
    rows = [line for line in out.splitlines() if line.startswith(("64x64x64", "mlp "))]
    assert len(rows) == 4 and all("2.00x" in r and "mr=3" in r for r in rows)
    assert f"saved to {tune.cache_path()}" in out
    entries = json.loads(tune.cache_path().read_text())["entries"]
    assert len(entries) == 4  # the square and three layouts of the MLP layer
    main(["tune", "--sizes", "64", "--mlp", "8", "16", "32"])
    assert capsys.readouterr().out.count("cached") == 4


def test_unwritable_cache_warns_and_still_uses_the_search(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(blocker))  # a file: no folder can go under it
    monkeypatch.setattr(tune, "tune_spec", fake_result)
    monkeypatch.setenv("ANYCHIP_TUNE", "1")
    with pytest.warns(RuntimeWarning, match="cannot save"):
        assert tune.tuned_tiling(SPEC).kc == 40
