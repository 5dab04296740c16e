"""Binary encode/decode and assembler/disassembler round trips over random instructions."""

from __future__ import annotations

import typing
from enum import IntEnum

import pytest
from hypothesis import given, settings, strategies as st

from anychip.npu import isa
from anychip.npu.asm import assemble, disassemble, format_instr, parse_instr
from anychip.npu.encoding import decode, encode
from anychip.npu.errors import AsmError, IllegalInstruction
from anychip.npu.isa import DT, Dma, Instr, Mma, Ref, SetFlag, Space, Unit
from anychip.npu.program import DataDecl, Program

I64 = st.integers(-(2**40), 2**40)
POS = st.integers(1, 4096)


def _strategy(cls: type[Instr], name: str, tp) -> st.SearchStrategy:
    """Values that satisfy the format's rules, so every draw builds."""
    if cls is isa.Mma and name in ("a", "b", "acc"):
        space = {"a": Space.L0A, "b": Space.L0B, "acc": Space.L0C}[name]
        return st.builds(Ref, st.just(space), I64, st.integers(0, 31))
    if cls is isa.Mma and name == "dtype":
        return st.sampled_from([DT.F16, DT.BF16, DT.I8, DT.F32])
    if cls in (isa.Gather, isa.ScatterAdd):
        if name == "table":
            return st.builds(Ref, st.just(Space.DRAM), I64, st.integers(0, 31))
        if name in ("dst", "index", "src"):
            return st.builds(Ref, st.sampled_from(isa.ONCHIP), I64, st.integers(0, 31))
        if name in ("table_stride", "dst_stride", "src_stride"):
            return st.integers(4096, 8192)
        if name == "dtype":
            return st.sampled_from([DT.F32, DT.F16, DT.BF16, DT.I32, DT.I64, DT.F64])
    if issubclass(cls, isa._Vec):
        if tp is Ref:
            return st.builds(Ref, st.sampled_from(isa.VECTOR_SPACES), I64, st.integers(0, 31))
        if tp is DT and cls is isa.VScan:
            return st.sampled_from([DT.F32, DT.I64, DT.F64])
        if tp is DT:
            return st.sampled_from([DT.F32, DT.F16, DT.BF16, DT.I32, DT.I64, DT.F64, DT.BOOL])
        if name in ("axis", "descending"):
            return st.sampled_from([0, 1])
        if tp is DT and cls is isa.VScan:
            return st.sampled_from([DT.F32, DT.I64, DT.F64])
    if issubclass(cls, isa._Flag):
        if name == "flag":
            return st.integers(0, isa.NUM_FLAGS - 1)
        return st.sampled_from([u for u in Unit if u != Unit.SCALAR])
    if name in ("accumulate", "trans_b"):
        return st.sampled_from([0, 1])
    if name in ("rd", "ra", "rb", "rs"):
        return st.integers(0, 31)
    if isinstance(tp, type) and issubclass(tp, IntEnum):
        return st.sampled_from(list(tp))
    if tp is Ref:
        return st.builds(Ref, st.sampled_from(list(Space)), I64, st.integers(0, 31))
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is int:
        return POS if name in ("m", "n", "k", "count", "row_len", "table_rows", "target") else I64
    n = len(typing.get_args(tp))
    if name == "dst_strides":  # destination elements must not overlap: nested strides
        nested = [st.integers(1, 2), st.integers(16384, 32768), st.integers(2**28, 2**29)]
        return st.tuples(*nested[:n][::-1])
    part = st.integers(-4096, 4096) if name.endswith("strides") else POS
    return st.tuples(*[part] * n)


def _instr(cls: type[Instr]) -> st.SearchStrategy:
    fields = {n: _strategy(cls, n, tp) for n, tp in typing.get_type_hints(cls).items()
              if n != "MNEMONIC"}  # fmt: skip
    if cls is Dma:
        # the destination box covers the copied box; DRAM to DRAM is not a thing
        def build(d):
            dst, src = d["dst"], d["src"]
            if dst.space == src.space == Space.DRAM:
                src = Ref(Space.UB, src.off)
            pad = d["shape"] if dst.space == Space.DRAM else tuple(
                s + p for s, p in zip(d["shape"], d["pad"], strict=True))  # fmt: skip
            return Dma(**{**d, "src": src, "pad": pad})

        return st.fixed_dictionaries(fields).map(build)
    if issubclass(cls, isa._Flag):
        units = [u for u in Unit if u != Unit.SCALAR]
        pairs = st.permutations(units).map(lambda p: p[:2])
        return st.tuples(pairs, fields["flag"]).map(lambda t: cls(t[0][0], t[0][1], t[1]))
    return st.fixed_dictionaries(fields).map(lambda d: cls(**d))


CLASSES = sorted({cls for _, cls, _ in isa.OPCODES}, key=lambda c: c.__name__)
INSTRS = st.one_of([_instr(c) for c in CLASSES])


@settings(max_examples=400, deadline=None)
@given(INSTRS)
def test_encode_decode_round_trip(inst):
    code = encode(inst)
    back, end = decode(code)
    assert back == inst and end == len(code)


@settings(max_examples=400, deadline=None)
@given(INSTRS)
def test_asm_disasm_round_trip(inst):
    assert parse_instr(format_instr(inst)) == inst


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(INSTRS, max_size=12), min_size=1, max_size=3))
def test_program_round_trips_as_text_and_binary(cores):
    data = (DataDecl("x", 0, DT.F16, (3, 5), "random"), DataDecl("y", 64, DT.F32, (7,), "none"))
    prog = Program(tuple(tuple(c) for c in cores), data)
    assert Program.from_bytes(prog.to_bytes()) == prog
    assert assemble(disassemble(prog)) == prog


def test_every_opcode_has_a_unique_mnemonic_and_unit():
    names = [name for name, _, _ in isa.OPCODES]
    assert len(set(names)) == len(names) < 256
    assert Dma(DT.F32, Ref(Space.DRAM, 0), Ref(Space.UB, 0), (1, 1, 4), (0, 0, 1), (0, 0, 1),
               (1, 1, 4)).unit == Unit.DMA_OUT  # fmt: skip
    assert SetFlag(Unit.MATRIX, Unit.VECTOR, 0).unit == Unit.MATRIX


def test_text_form_reads_like_the_docs():
    text = "mma dtype=f16 acc=l0c:0 a=l0a:r4+128 b=l0b:0 m=16 n=16 k=16 accumulate=1 trans_b=0"
    inst = parse_instr(text)
    assert inst == Mma(DT.F16, Ref(Space.L0C, 0), Ref(Space.L0A, 128, 4), Ref(Space.L0B, 0),
                       16, 16, 16, 1, 0)  # fmt: skip
    assert format_instr(inst) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vfrob dtype=f32", "unknown mnemonic 'vfrob'"),
        ("smov rd=1 imm=2 colour=3", "smov has no field 'colour'"),
        ("smov rd=1 imm=zz", r"smov field imm='zz'"),
        ("mma dtype=i32 acc=l0c:0 a=l0a:0 b=l0b:0 m=1 n=1 k=1", "i32 is not a matrix input type"),
        (
            "vcmpeq dtype=f32 dst=l1:0 a=ub:0 b=ub:0 shape=1,1 dst_strides=1,1 a_strides=1,1 "
            "b_strides=1,1",
            "dst must be in ub/l0c, got l1",
        ),
        (
            "scatter_add dtype=bool table=dram:0 src=ub:0 index=ub:64 count=1 row_len=1 "
            "table_stride=1 src_stride=1 table_rows=1",
            "bool cannot be added",
        ),
        ("sst dtype=f32 dst=ub:0 rs=32", "register r32 does not exist"),
        ("mma dtype=f16 acc=ub:0 a=l0a:0 b=l0b:0 m=1 n=1 k=1", "acc must be in l0c, got ub"),
        ("setf src=matrix dst=matrix flag=1", "flags connect two different"),
        ("waitf src=dma_in dst=matrix flag=16", "flag 16 out of range"),
        ("smov rd=40 imm=0", "register r40 does not exist"),
    ],
)
def test_bad_text_raises_with_a_clear_message(text, message):
    with pytest.raises((AsmError, IllegalInstruction), match=message):
        parse_instr(text)


def test_assemble_reports_the_line_and_labels_resolve():
    with pytest.raises(AsmError, match="line 3"):
        assemble(".core 0\nsmov rd=1 imm=2\nbogus\n")
    prog = assemble("top:\n  saddi rd=1 ra=1 imm=1\n  blt ra=1 rb=2 target=top\n  finish\n")
    assert prog.cores[0][1].target == 0


def test_decode_rejects_garbage():
    with pytest.raises(AsmError):
        decode(bytes([255]))
    with pytest.raises(AsmError):
        decode(encode(isa.SMov(1, 2))[:-1])
    with pytest.raises(AsmError, match="magic"):
        Program.from_bytes(b"ELF....")
