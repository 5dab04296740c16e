"""docs/coverage.md is generated from the code: it must equal what scripts/coverage.py
renders now (rerun `python scripts/coverage.py` after adding ops)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script() -> object:
    spec = importlib.util.spec_from_file_location(
        "coverage_script", ROOT / "scripts" / "coverage.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_coverage_page_is_current() -> None:
    script = _script()
    page = (ROOT / "docs" / "coverage.md").read_text()
    assert page == script.render(), "docs/coverage.md is stale: run python scripts/coverage.py"  # type: ignore[attr-defined]


def test_page_counts_what_anychip_has() -> None:
    page = (ROOT / "docs" / "coverage.md").read_text()
    # spot checks of both lists against names known present and absent
    supported = {
        line.split(":")[0]: line for line in page.splitlines() if line.startswith("Supported")
    }
    assert supported and all("(" in k for k in supported)
    section = page.split("## `torch.nn.functional`")[1].split("## ")[0]
    have, missing = section.split("Missing")
    assert "`softmax`" in have and "`batch_norm`" in have and "`logsigmoid`" in have
    assert "`softmax`" not in missing
