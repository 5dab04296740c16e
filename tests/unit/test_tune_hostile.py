"""A hostile GEMM tuning-cache file (zeros, wrong types, absurd sizes, garbage) is ignored
with a warning: the default tiling is used and nothing raises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anychip.codegen.gemm import GemmSpec, default_tiling
from anychip.runtime import tune

SPEC = GemmSpec(1, 200, 200, 200, "float32")
GOOD = {"mr": 4, "nr": 16, "vec_bytes": 32, "kc": 64, "l2_share": 0.5, "unroll": 2}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANYCHIP_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ANYCHIP_TUNE", raising=False)
    tune._MEMO.clear()
    return tmp_path


def write(data: object) -> None:
    path = tune.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data))


def with_entry(entry: object) -> dict[str, object]:
    machine = tune.machine_fingerprint()
    return {"version": 1, "machine": machine, "entries": {tune.shape_class(SPEC): entry}}


@pytest.mark.parametrize(
    "choice",
    [
        {**GOOD, "mr": 0},  # ZeroDivisionError in the blocking arithmetic before the fix
        {**GOOD, "nr": 0},
        {**GOOD, "l2_share": 0},
        {**GOOD, "mr": "4"},
        {**GOOD, "kc": 64.5},
        {**GOOD, "unroll": True},
        {**GOOD, "mr": 10**9},  # a register tile of a billion rows would never render
        {**GOOD, "vec_bytes": 24},
        {**GOOD, "l2_share": float("nan")},
        {**GOOD, "colour": "red"},
        [4, 16, 32],
        "mr=4",
        None,
    ],
)
def test_hostile_choice_is_ignored(choice: object) -> None:
    write(with_entry({"choice": choice}))
    with pytest.warns(RuntimeWarning, match="bad entry"):
        assert tune.tuned_tiling(SPEC) == default_tiling(SPEC)


@pytest.mark.parametrize("entry", [[1, 2], "x", 3, {"tiling": {}}])
def test_hostile_entry_is_ignored(entry: object) -> None:
    write(with_entry(entry))
    with pytest.warns(RuntimeWarning, match="bad entry|ignoring"):
        assert tune.tuned_tiling(SPEC) == default_tiling(SPEC)


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage", "[" * 100_000 + "]" * 100_000, "{}", '{"version": 1}', "0"],
    ids=["bytes", "deep", "empty", "no-machine", "number"],
)
def test_garbage_file_is_ignored(content: object) -> None:
    write(content)
    with pytest.warns(RuntimeWarning, match="ignoring the cache"):
        assert tune.tuned_tiling(SPEC) == default_tiling(SPEC)


def test_a_good_entry_still_serves() -> None:
    write(with_entry({"choice": GOOD}))
    t = tune.tuned_tiling(SPEC)
    assert (t.mr, t.nr, t.vec_bytes, t.kc, t.unroll) == (4, 16, 32, 64, 2)
