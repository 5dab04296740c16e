"""docs/npu-isa.md stays true: every instruction of isa.py is documented, and its example
program is canonical assembly that round-trips and computes what the text says."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from anychip.npu import isa
from anychip.npu.asm import assemble, disassemble
from anychip.npu.config import PROFILES
from anychip.npu.isa import DT
from anychip.npu.simulator import Simulator

DOC = Path(__file__).resolve().parents[3] / "docs" / "npu-isa.md"


def _doc() -> str:
    return DOC.read_text()


def _formats() -> list[type[isa.Instr]]:
    """Every concrete instruction format defined in isa.py (found by walking the module)."""
    found = [
        v
        for v in vars(isa).values()
        if isinstance(v, type)
        and issubclass(v, isa.Instr)
        and dataclasses.is_dataclass(v)
        and v.__module__ == isa.__name__
    ]
    assert len(found) >= 17  # sanity: the walk sees the formats
    return found


def _section(doc: str, cls: type[isa.Instr]) -> str:
    """The doc text from the heading naming `cls` up to the next heading."""
    m = re.search(rf"^#+ .*`{cls.__name__}`.*$", doc, re.M)
    assert m, f"docs/npu-isa.md has no heading naming `{cls.__name__}`"
    nxt = re.search(r"^#+ ", doc[m.end() :], re.M)
    return doc[m.start() : m.end() + (nxt.start() if nxt else len(doc))]


@pytest.mark.parametrize("cls", _formats(), ids=lambda c: c.__name__)
def test_every_format_has_a_section_listing_its_fields(cls):
    section = _section(_doc(), cls)
    for f in dataclasses.fields(cls):
        if f.name not in ("op", "cond"):  # carried by the mnemonic
            assert f"`{f.name}`" in section, f"{cls.__name__} field {f.name} not documented"


def test_every_mnemonic_and_opcode_appears():
    doc = _doc()
    for name, cls, _ in isa.OPCODES:
        assert re.search(rf"`{name}`|\b{name}\b", doc), f"mnemonic {name} missing"
        assert cls.__name__ in doc
    # the encoding table lists every opcode number (singly or as a range)
    table = re.findall(r"^\| (\d+)(?:-(\d+))? \|", doc, re.M)
    covered = {n for lo, hi in table for n in range(int(lo), int(hi or lo) + 1)}
    assert covered == set(range(len(isa.OPCODES)))


def test_encoding_table_sizes_match_the_encoder():
    from anychip.npu.encoding import _layout

    doc = _doc()
    for cls in _formats():
        st, _ = _layout(cls)
        row = re.search(rf"^\|[^|]*\|[^|]*\| `{cls.__name__}` \| (\d+) \|", doc, re.M)
        assert row, f"no encoding row for {cls.__name__}"
        assert int(row.group(1)) == 1 + st.size, cls.__name__


def _example() -> str:
    m = re.search(r"```npu-asm\n(.*?)```", _doc(), re.S)
    assert m, "docs/npu-isa.md has no ```npu-asm example"
    return m.group(1)


def test_example_is_canonical_and_round_trips():
    text = _example()
    prog = assemble(text)
    assert disassemble(prog) == text
    assert type(prog).from_bytes(prog.to_bytes()) == prog


def test_example_computes_sigmoid():
    prog = assemble(_example())
    sim = Simulator(PROFILES["edge"])
    x_decl, y_decl = prog.data
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    sim.dram.ensure(1024)
    sim.write(x_decl.addr, x)
    sim.run(prog)
    y = sim.get(y_decl.addr, y_decl.shape, DT.F32)
    want = (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    np.testing.assert_array_equal(y, want)
