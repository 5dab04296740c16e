"""`anychip rec`: its sub-subcommands, and `anychip rec bench --quick` running the
synthetic DLRM benchmark end to end (figures are not checked: timing belongs in bench/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anychip.cli import build_parser, main


def test_rec_lists_its_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rec", "--help"])
    assert "bench" in capsys.readouterr().out
    assert main(["rec"]) == 1
    assert "give a subcommand" in capsys.readouterr().err


@pytest.mark.slow
def test_rec_bench_quick_writes_figures(tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    argv = ["rec", "bench", "--quick", "--threads", "1", "--only", "anychip_jit,torch"]
    assert main([*argv, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"anychip_jit@1", "torch@1"}
    for row in doc.values():
        assert row["samples_per_s"] > 0 and row["peak_bytes"] > 0
