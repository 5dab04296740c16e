"""anychip.npu: a configurable AI accelerator as software — ISA, assembler, functional and
timing simulators, design profiles, and the chip's first kernel library.

>>> from anychip.npu import PROFILES
>>> sorted(PROFILES)
['cube', 'datacenter', 'edge']
"""

from __future__ import annotations

from anychip.npu.config import PROFILES, BufferSpec, NpuConfig, get_config

__all__ = ["PROFILES", "BufferSpec", "NpuConfig", "get_config"]
