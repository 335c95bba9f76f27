from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import DeviceConfig, load_config
from runtime.errors import ConfigError


def test_defaults_work_when_no_file_is_given() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, DeviceConfig)
    assert cfg.inference.backend == ["onnxruntime", "litert", "openvino"]


def test_backend_is_a_preference_list_when_one_name_or_several_are_given(tmp_path: Path) -> None:
    p = tmp_path / "d.yaml"
    p.write_text("inference:\n  backend: litert\n")
    assert load_config(p).inference.backend == ["litert"]
    p.write_text("inference:\n  backend: [openvino, onnxruntime]\n")
    assert load_config(p).inference.backend == ["openvino", "onnxruntime"]
    p.write_text("inference:\n  backend: [onnxruntme]\n")
    with pytest.raises(ConfigError, match="unknown engine 'onnxruntme'"):
        load_config(p)


def test_unknown_key_is_rejected_when_config_has_a_typo(tmp_path: Path) -> None:
    p = tmp_path / "d.yaml"
    p.write_text("device_id: x\nstore:\n  max_byte: 10\n")
    with pytest.raises(ConfigError, match=r"store\.max_byte"):
        load_config(p)


def test_error_names_the_file_when_it_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_error_is_one_line_when_yaml_is_broken(tmp_path: Path) -> None:
    p = tmp_path / "d.yaml"
    p.write_text("a: [\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("bad", ["-1", ".inf", ".nan", "fast"])
def test_store_max_rate_is_refused_in_one_line_when_not_a_finite_rate(
    tmp_path: Path, bad: str
) -> None:
    p = tmp_path / "d.yaml"
    p.write_text(f"store:\n  max_rate: {bad}\n")
    with pytest.raises(ConfigError, match=r"store\.max_rate") as ei:
        load_config(p)
    assert "\n" not in str(ei.value)
