"""Buffer ports: each on-chip buffer moves at most `banks * bank_width` bytes per cycle,
reads and writes of every unit together; the timing model shares that among its users.

An instruction starting while others hold a buffer's port gets what they leave (at least
an equal share); it then holds its rate, bytes / duration, until it ends. Earlier users
are not slowed down by later ones (first come, first served), so the rates in use can
exceed the port only when more users arrive than it can serve.
"""

from __future__ import annotations

from anychip.npu.config import NpuConfig

_OPEN = float("inf")  # a device-memory transfer's end is not known when it starts


class Reservation:
    """One user's hold on one buffer's port: `rate` bytes/cycle until `end`."""

    __slots__ = ("end", "rate")

    def __init__(self, end: float, rate: float) -> None:
        self.end, self.rate = end, rate


class Ports:
    """The ports of every buffer of every core.

    >>> from anychip.npu.config import PROFILES
    >>> p = Ports(PROFILES["edge"])  # edge's ub: 4 banks x 32 B = 128 B/cycle
    >>> p.share(0, (("ub", 1280),), 0.0, 5.0)  # alone: 1280 B / 128 B per cycle
    10.0
    >>> p.share(0, (("ub", 640),), 0.0, 5.0)  # shares with the first: half the port
    10.0
    """

    def __init__(self, cfg: NpuConfig) -> None:
        self.bandwidth = {name: float(cfg.buffer(name).bandwidth)
                          for name in ("l1", "l0a", "l0b", "l0c", "ub")}  # fmt: skip
        self.held: dict[tuple[int, str], list[Reservation]] = {}

    def _avail(self, core: int, name: str, now: float) -> tuple[float, list[Reservation]]:
        held = self.held.setdefault((core, name), [])
        if held:
            held[:] = [r for r in held if r.end > now]
        bw = self.bandwidth[name]
        used = sum(r.rate for r in held)
        return max(bw - used, bw / (len(held) + 1)), held

    def share(self, core: int, ports: tuple[tuple[str, int], ...], now: float,
              cycles: float) -> float:  # fmt: skip
        """The duration of an instruction needing `cycles` alone and moving `ports` bytes
        now; its rates are held until it ends."""
        holds = []
        for name, nbytes in ports:
            if nbytes:
                avail, held = self._avail(core, name, now)
                cycles = max(cycles, nbytes / avail)
                holds.append((held, nbytes))
        for held, nbytes in holds:
            held.append(Reservation(now + cycles, nbytes / cycles if cycles else 0.0))
        return cycles

    def open(self, core: int, ports: tuple[tuple[str, int], ...], now: float,
             cap: float) -> tuple[float, list[Reservation]]:  # fmt: skip
        """A transfer of unknown length: its rate limited to what the ports leave; close
        the returned reservations when it ends."""
        picked = []
        for name, nbytes in ports:
            if nbytes:
                avail, held = self._avail(core, name, now)
                cap = min(cap, avail)
                picked.append(held)
        res = [Reservation(_OPEN, cap) for _ in picked]
        for held, r in zip(picked, res, strict=True):
            held.append(r)
        return cap, res

    @staticmethod
    def close(res: list[Reservation], now: float) -> None:
        for r in res:
            r.end = now
