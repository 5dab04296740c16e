"""Hazards as the chip has them: flags that wait before they are set, deadlocks, flags never
waited on, overlapping destinations, and runaway programs stopped by the instruction budget."""

from __future__ import annotations

import numpy as np
import pytest

from anychip.npu.asm import assemble
from anychip.npu.config import PROFILES
from anychip.npu.errors import AsmError, IllegalInstruction, OverlapError, SyncError
from anychip.npu.isa import (
    DT,
    Barrier,
    BinOp,
    Branch,
    Cond,
    Dma,
    Finish,
    Ref,
    SAluI,
    SetFlag,
    SMov,
    SOp,
    Space,
    Unit,
    UnOp,
    VBin,
    VUn,
    WaitFlag,
)
from anychip.npu.program import Program
from anychip.npu.simulator import Simulator
from anychip.npu.timing import simulate_timing

DRAM, UB = Space.DRAM, Space.UB
DI, DO, VE = Unit.DMA_IN, Unit.DMA_OUT, Unit.VECTOR


def _row(dst: Ref, src: Ref, n: int = 8) -> Dma:
    return Dma(DT.F32, dst, src, (1, 1, n), (0, 0, 1), (0, 0, 1), (1, 1, n))


def _exp(dst: int, src: int, n: int = 8) -> VUn:
    return VUn(UnOp.EXP, DT.F32, Ref(UB, dst), Ref(UB, src), (1, n), (n, 1), (n, 1))


def _setup() -> tuple[Simulator, int, int]:
    sim = Simulator(PROFILES["edge"])
    x = sim.put(np.arange(8, dtype=np.float32) / 8, DT.F32)
    return sim, x, sim.alloc(32)


def test_a_wait_queued_before_its_set_on_another_unit_is_legal():
    sim, x, y = _setup()
    code = (
        WaitFlag(DI, VE, 0),  # the vector unit stalls here ...
        _exp(64, 0),  # ... so this waits in its queue
        SetFlag(VE, DO, 0),
        _row(Ref(UB, 0), Ref(DRAM, x)),  # dma_in runs on
        SetFlag(DI, VE, 0),  # ... and releases the vector unit
        WaitFlag(VE, DO, 0),
        _row(Ref(DRAM, y), Ref(UB, 64)),
        Finish(),
    )
    sim.run(Program((code,)))
    want = np.exp(np.arange(8, dtype=np.float64) / 8).astype(np.float32)
    np.testing.assert_array_equal(sim.get(y, (8,), DT.F32), want)
    assert simulate_timing(Program((code,)), "edge").cycles > 0  # the timing model agrees


def _both_raise(code: tuple, match: str) -> None:
    sim, _, _ = _setup()
    with pytest.raises(SyncError, match=match):
        sim.run(Program((code,)))
    with pytest.raises(SyncError):
        simulate_timing(Program((code,)), "edge")


def test_units_waiting_on_each_other_deadlock_and_both_models_say_so():
    code = (
        WaitFlag(DI, VE, 0),
        WaitFlag(VE, DI, 0),
        SetFlag(DI, VE, 0),  # behind dma_in's wait: never runs
        SetFlag(VE, DI, 0),  # behind the vector unit's wait
        Finish(),
    )
    want = r"deadlock on core 0: the dma_in unit waits on flag 0 from vector.*program ends"
    _both_raise(code, want + r".* at core 0 instruction #1 `waitf src=vector dst=dma_in flag=0`")


def test_a_full_queue_behind_a_wait_is_a_deadlock_found_at_once():
    depth = PROFILES["edge"].queue_depth
    code = (
        _row(Ref(UB, 0), Ref(DRAM, 0)),
        Barrier(),
        WaitFlag(DI, VE, 0),
        *[_exp(64, 0)] * depth,  # the queue fills: the setf below is never dispatched
        SetFlag(DI, VE, 0),
        Finish(),
    )
    _both_raise(code, rf"vector queue is full \({depth} instructions\).*instruction #{depth + 2}")


def test_a_barrier_while_a_unit_waits_is_a_deadlock():
    code = (WaitFlag(DI, VE, 0), Barrier(), SetFlag(DI, VE, 0), WaitFlag(DI, VE, 0), Finish())
    _both_raise(code, "barrier waits for every queue to drain")


def test_a_flag_set_and_never_waited_on_is_reported():
    sim, x, _ = _setup()
    code = (_row(Ref(UB, 0), Ref(DRAM, x)), SetFlag(DI, VE, 3), Finish())
    with pytest.raises(SyncError, match=r"flag 3 from dma_in to vector is set and never waited "
                       r"on.*instruction #1 `setf src=dma_in dst=vector flag=3`"):  # fmt: skip
        sim.run(Program((code,)))


def test_a_dma_whose_destination_stride_is_zero_is_illegal():
    with pytest.raises(IllegalInstruction, match="destination elements overlap"):
        Dma(DT.F32, Ref(UB, 0), Ref(DRAM, 0), (1, 1, 8), (0, 0, 0), (0, 0, 1), (1, 1, 8))
    text = ("dma dtype=f32 dst=ub:0 src=dram:0 shape=1,4,8 dst_strides=0,4,1 "
            "src_strides=0,8,1 pad=1,4,8 pad_value=0.0")  # fmt: skip  # rows 4 apart, 8 long
    with pytest.raises(AsmError, match="line 1: npu: illegal dma: destination elements overlap"):
        assemble(text)
    # a stride of 0 over a dimension of 1 writes nothing twice
    Dma(DT.F32, Ref(UB, 0), Ref(DRAM, 0), (1, 1, 8), (0, 0, 1), (0, 0, 1), (1, 1, 8))


@pytest.mark.parametrize("shift, bad", [(0, False), (4, True), (-4, True), (32, False)])
def test_a_vector_destination_overlapping_its_source_shifted_is_reported(shift, bad):
    sim, x, _ = _setup()
    op = VBin(BinOp.ADD, DT.F32, Ref(UB, 64 + shift), Ref(UB, 64), Ref(UB, 0), (1, 8), (8, 1),
              (8, 1), (8, 1))  # fmt: skip
    code = (_row(Ref(UB, 0), Ref(DRAM, x)), _row(Ref(UB, 64), Ref(DRAM, x)), Barrier(), op,
            Finish())  # fmt: skip
    if bad:
        with pytest.raises(OverlapError, match=f"ub byte {64 + max(shift, 0)}.*`vadd"):
            sim.run(Program((code,)))
    else:  # in place, or beside the source
        sim.run(Program((code,)))


def test_an_on_chip_copy_onto_itself_shifted_is_reported():
    sim, x, _ = _setup()
    code = (_row(Ref(UB, 0), Ref(DRAM, x)), Barrier(), _row(Ref(UB, 4), Ref(UB, 0)), Finish())
    with pytest.raises(OverlapError, match="ub byte 4"):
        sim.run(Program((code,)))


def _counting_loop() -> tuple:
    """r3 counts up from 1 and the loop runs until it wraps to 0: 2^64 trips."""
    return (SMov(3, 1), _exp(64, 0), SAluI(SOp.ADD, 3, 3, 1), Branch(Cond.NE, 3, 0, 1),
            Finish())  # fmt: skip


def test_the_instruction_budget_stops_a_runaway_before_any_work():
    sim, _, _ = _setup()
    # the loop's vector reads never-written memory: a fault if anything ran before the check
    with pytest.raises(SyncError, match=r"ran 3000 instructions.*budget.*"
                       r"instruction #3 `bne ra=3 rb=0 target=1`"):  # fmt: skip
        sim.run(Program((_counting_loop(),)), max_steps=3000)
    small = Simulator(PROFILES["edge"].replace(max_instructions=5000))
    with pytest.raises(SyncError, match="ran 5000 instructions"):
        small.run(Program((_counting_loop(),)))
    with pytest.raises(SyncError, match="ran 3000 instructions"):  # the timing model too
        simulate_timing(Program((_counting_loop(),)), "edge", max_steps=3000)


def test_a_loop_whose_control_registers_never_change_is_stopped_at_once():
    # r4 changes every trip but decides no branch; r3 (the branch's) never changes
    code = (SMov(3, 1), SAluI(SOp.ADD, 4, 4, 64), Branch(Cond.NE, 3, 0, 1), Finish())
    sim, _, _ = _setup()
    with pytest.raises(SyncError, match=r"loops forever.*\(r3=1\).*`bne ra=3 rb=0 target=1`"):
        sim.run(Program((code,)), max_steps=10**12)  # no budget would stop it
    with pytest.raises(SyncError, match="loops forever"):
        simulate_timing(Program((code,)), "edge", max_steps=10**12)
