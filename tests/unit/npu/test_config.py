"""The design config: validation names the bad field; TOML and JSON files round-trip."""

from __future__ import annotations

import pytest

from anychip.npu.config import PROFILES, BufferSpec, NpuConfig, get_config
from anychip.npu.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PROFILES))
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_profiles_round_trip_through_files(tmp_path, name, suffix):
    cfg = PROFILES[name]
    path = tmp_path / f"design{suffix}"
    cfg.save(path)
    assert NpuConfig.load(path) == cfg
    assert get_config(str(path)) == cfg


def test_profiles_are_distinct_design_points():
    edge, dc, cube = PROFILES["edge"], PROFILES["datacenter"], PROFILES["cube"]
    assert (cube.matrix_m, cube.matrix_n, cube.matrix_k) == (16, 16, 16)
    assert cube.l1.size > 0 and edge.l1.size == 0
    assert dc.peak_flops > cube.peak_flops > edge.peak_flops
    # peak by hand: 128^3 MACs per 128 cycles = 16384 MAC/cycle, x2 FLOPs, 4 cores, 1.5 GHz
    assert dc.peak_flops == 16384 * 2 * 4 * 1.5e9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cores": 0}, "cores must be an integer >= 1"),
        ({"clock_ghz": -1.0}, "clock_ghz must be a number > 0"),
        ({"matrix_dtypes": ("f16", "f64")}, "matrix_dtypes"),
        ({"vector_dtypes": ()}, "vector_dtypes"),
        ({"matrix_macs_per_cycle": 5000}, "exceeds the 16x16x16 tile's 4096 MACs"),
        ({"ub": BufferSpec(1000, 3)}, "ub.size 1000 is not divisible by its 3 banks"),
        ({"l0a": BufferSpec(0)}, "l0a.size must be an integer >= 1"),
        ({"dma_latency": -5}, "dma_latency must be an integer >= 0"),
        ({"matrix_dataflow": "is"}, "matrix_dataflow must be one of"),
        ({"matrix_dataflow": "ws", "matrix_macs_per_cycle": 300}, "a multiple of 256"),
        ({"matrix_double_buffer": 1}, "matrix_double_buffer must be true or false"),
        ({"dram_page": 0}, "dram_page must be an integer >= 1"),
        ({"dma_outstanding": 0}, "dma_outstanding must be an integer >= 1"),
        ({"dram_activate": -1}, "dram_activate must be an integer >= 0"),
        ({"dram_queueing": -0.5}, "dram_queueing must be >= 0"),
        ({"energy.mac_f16": -1.0}, "energy.mac_f16 must be a number >= 0"),
    ],
)
def test_validation_names_the_field(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        PROFILES["cube"].replace(**change)


def test_unknown_keys_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        NpuConfig.from_dict({"cores": 2, "warp_size": 32})
    with pytest.raises(ConfigError, match="unknown key"):
        PROFILES["edge"].replace(**{"ub.speed": 3})
    path = tmp_path / "bad.toml"
    path.write_text("cores = 2\n[ub]\nsize = 4096\nports = 2\n")
    with pytest.raises(ConfigError, match="ports"):
        NpuConfig.load(path)


def test_replace_dotted_buffer_keys_and_missing_keys_default():
    cfg = PROFILES["edge"].replace(**{"l0c.size": 1 << 20, "l0c.banks": 8})
    assert cfg.l0c == BufferSpec(1 << 20, 8, PROFILES["edge"].l0c.bank_width)
    assert NpuConfig.from_dict({"cores": 3}).cores == 3
    with pytest.raises(ConfigError, match="no profile or config file"):
        get_config("nosuch")


def test_energy_is_a_table_of_the_design():
    cfg = PROFILES["cube"].replace(**{"energy.static_w": 12.5})
    assert cfg.energy.static_w == 12.5 and cfg.energy.mac_f16 == PROFILES["cube"].energy.mac_f16
    assert NpuConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        PROFILES["cube"].replace(**{"energy.mac_f64": 1.0})
