"""optim.rowstate: per-row optimizer state follows a table that grows and recycles rows."""

import numpy as np

import anychip as ac
from anychip.optim.rowstate import reset_rows, sync_row_state


def test_state_grows_with_zero_rows_and_resets_marked_rows() -> None:
    w = ac.nn.Parameter(ac.ones(3, 2))
    state = {"sum": ac.full((3, 2), 5.0), "step": ac.tensor(4.0)}
    sync_row_state(state, w, ("sum", "step"))
    np.testing.assert_array_equal(state["sum"].numpy(), np.full((3, 2), 5.0))
    w.data = ac.ones(5, 2)  # the table grew
    reset_rows(w, [1])  # and row 1 went to a new id
    sync_row_state(state, w, ("sum", "step"))
    want = np.full((5, 2), 5.0)
    want[1] = 0
    want[3:] = 0
    np.testing.assert_array_equal(state["sum"].numpy(), want)
    assert state["step"].item() == 4.0  # 0-d state is not per row
    state["sum"] = state["sum"] + 1  # seen resets are not applied twice
    sync_row_state(state, w, ("sum",))
    np.testing.assert_array_equal(state["sum"].numpy(), want + 1)


def test_two_followers_each_see_every_reset() -> None:
    w = ac.nn.Parameter(ac.ones(4))
    a, b = {"m": ac.ones(4)}, {"m": ac.ones(4)}
    reset_rows(w, np.array([0, 2]))
    sync_row_state(a, w, ("m",))
    reset_rows(w, [3])
    sync_row_state(b, w, ("m",))
    sync_row_state(a, w, ("m",))
    assert a["m"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert b["m"].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_follow_rows_syncs_every_per_row_state() -> None:
    from anychip.optim.rowstate import follow_rows

    w = ac.nn.Parameter(ac.ones(3, 2))
    state = {"m": ac.full((3, 2), 5.0), "rowsum": ac.full((3,), 7.0), "step": ac.tensor(2.0)}
    follow_rows(state, w)  # nothing grew, nothing reset: no bookkeeping added
    assert "_rows_reset_seen" not in state
    w.data = ac.ones(4, 2)
    reset_rows(w, [0])
    follow_rows(state, w)
    assert state["m"].tolist() == [[0.0, 0.0], [5.0, 5.0], [5.0, 5.0], [0.0, 0.0]]
    assert state["rowsum"].tolist() == [0.0, 7.0, 7.0, 0.0]
    assert state["step"].item() == 2.0
