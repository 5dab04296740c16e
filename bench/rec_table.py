"""DynamicEmbedding's id index: ids per second for batches of 64K raw int64 ids on a table
of 1M rows, and the table's memory against its rows' bytes.

Peers in the same run: a Python dict (one lookup per id, what the index replaces) and a
sorted key array with np.searchsorted plus a merge per insert (the other vectorised design).
Run: PYTHONPATH=src python bench/rec_table.py [--rows N] [--batch B] [--dim D] [--repeat R]
[--cpu-time]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from anychip.rec import DynamicEmbedding
from anychip.rec.index import IdIndex
from anychip.runtime.device import default_device


def best_s(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of `repeat` timed calls after one warm-up: wall time, or with --cpu-time
    this process's CPU time (fairer on a machine shared with other jobs; numpy runs the
    index on one thread)."""
    fn()
    clock = time.process_time if CPU_TIME else time.perf_counter
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


CPU_TIME = False


def zipf_batch(rng: np.random.Generator, keys: np.ndarray, batch: int) -> np.ndarray:
    """A batch of known ids, popular ones often (Zipf 1.2 over a shuffled key order)."""
    rank = np.minimum(rng.zipf(1.2, batch) - 1, keys.size - 1)
    return keys[rank]


class SortedIndex:
    """The alternative design: sorted keys + searchsorted; inserts merge the new keys in."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)
        self.vals = np.zeros(0, np.int64)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.keys, ids), max(self.keys.size - 1, 0))
        return np.where(self.keys[pos] == ids, self.vals[pos], -1)

    def insert(self, ids: np.ndarray, vals: np.ndarray) -> None:
        order = np.argsort(ids)
        pos = np.searchsorted(self.keys, ids[order])
        self.keys = np.insert(self.keys, pos, ids[order])
        self.vals = np.insert(self.vals, pos, vals[order])


def with_new_ids(q: np.ndarray, new_frac: float, seed: int) -> Callable[[], np.ndarray]:
    """Batches like q whose first new_frac are ids never seen before (fresh each call)."""
    rng = np.random.default_rng(seed)
    n_new = int(q.size * new_frac)

    def batch() -> np.ndarray:
        b = q.copy()
        b[:n_new] = rng.integers(-(2**63), 2**63 - 1, n_new, dtype=np.int64)
        return b

    return batch


def index_case(
    ix: IdIndex | SortedIndex, keys: np.ndarray, q: np.ndarray, new_frac: float, repeat: int
) -> tuple[float, float]:
    """ids/s of lookups, and of lookups + inserting the new ids, on an index of keys."""
    for i in range(0, keys.size, 1 << 16):
        part = keys[i : i + (1 << 16)]
        ix.insert(part, np.arange(i, i + part.size))
    lookup = q.size / best_s(lambda: ix.lookup(q), repeat)
    batches, next_number = with_new_ids(q, new_frac, 3), [keys.size]  # numbers not in use

    def mixed() -> None:
        b = batches()
        new = np.unique(b[ix.lookup(b) < 0])
        ix.insert(new, np.arange(next_number[0], next_number[0] + new.size))
        next_number[0] += new.size

    return lookup, q.size / best_s(mixed, repeat)


def index_rates(keys: np.ndarray, batch: int, repeat: int, new_frac: float) -> dict[str, float]:
    """ids/s of lookups and of lookup + insert of new ids, for our index and peers."""
    q = zipf_batch(np.random.default_rng(1), keys, batch)
    out: dict[str, float] = {}
    for name, ix in (("hash (ours)", IdIndex()), ("sorted array", SortedIndex())):
        look, mixed = index_case(ix, keys, q, new_frac, repeat)
        out[f"{name}: lookup"] = look
        out[f"{name}: lookup + insert {new_frac:.0%} new"] = mixed
    uniform = keys[np.random.default_rng(2).integers(0, keys.size, batch)]
    ix = IdIndex()
    ix.insert(keys, np.arange(keys.size))
    out["hash (ours): lookup, uniform ids"] = batch / best_s(lambda: ix.lookup(uniform), repeat)
    d = dict(zip(keys.tolist(), range(keys.size), strict=True))
    ql = q.tolist()
    out["python dict: lookup"] = batch / best_s(lambda: [d.get(k, -1) for k in ql], repeat)
    return out


def table_rates(
    keys: np.ndarray, dim: int, batch: int, repeat: int, new_frac: float, device: str
) -> tuple[dict[str, float], DynamicEmbedding]:
    """A table of keys.size rows, filled through training calls; then ids/s of its
    host mapping (count, admit, stamp) and of whole forward calls."""
    table = DynamicEmbedding(dim, ttl=10**9, device=device)
    for i in range(0, keys.size, batch):
        table(keys[i : i + batch])
    q = zipf_batch(np.random.default_rng(2), keys, batch)
    batches = with_new_ids(q, new_frac, 4)

    def train_map() -> None:
        table._map("bench", batches(), None)

    out = {
        "table: map ids (eval)": batch / best_s(lambda: table.rows_of(q), repeat),
        f"table: map ids (train, {new_frac:.0%} new)": batch / best_s(train_map, repeat),
    }
    table.eval()
    out["table: forward (eval, rows gathered)"] = batch / best_s(lambda: table(q).realize(), repeat)
    table.train()
    return out, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1 << 20)
    ap.add_argument("--batch", type=int, default=1 << 16)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--new-frac", type=float, default=0.05)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default=None, help="where the table's rows live")
    ap.add_argument("--cpu-time", action="store_true", help="time by process CPU time")
    args = ap.parse_args()
    global CPU_TIME
    CPU_TIME = args.cpu_time
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, args.rows, dtype=np.int64))
    rng.shuffle(keys)
    clock = "process CPU time" if CPU_TIME else "wall time"
    device = args.device or default_device()
    print(f"{args.rows} ids (random int64), batches of {args.batch}, {clock}, device {device}")
    rates = index_rates(keys, args.batch, args.repeat, args.new_frac)
    more, table = table_rates(keys, args.dim, args.batch, args.repeat, args.new_frac, device)
    rates.update(more)
    base = rates["python dict: lookup"]
    print(f"{'':<44}{'M ids/s':>9}{'vs dict':>9}")
    for name, r in rates.items():
        print(f"{name:<44}{r / 1e6:>9.1f}{r / base:>8.1f}x")
    payload = len(table) * args.dim * 4
    mem = table.memory_bytes()
    print(
        f"\ntable: {len(table)} rows of dim {args.dim}, capacity {table.capacity}; "
        f"memory {mem / 2**20:.1f} MiB = {mem / payload:.3f}x rows x dim x 4 bytes "
        f"({table.bytes_per_row:.0f} bytes per row; optimizer state not included: "
        f"Adagrad adds capacity x dim x 4 = {table.capacity * args.dim * 4 / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
