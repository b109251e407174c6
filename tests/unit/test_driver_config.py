"""The station's config file: area codes become alert topics, so they are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loaxa_protocol.errors import ConfigError
from node_firmware.config import load_node_config


def write(tmp_path: Path, areas: list[str]) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(
        yaml.safe_dump(
            {"station_id": "st-01273-001", "areas": areas, "trusted_keys": [],
             "data_dir": str(tmp_path / "data")}
        )
    )  # fmt: skip
    return path


def test_area_codes_are_loaded_nearest_first(tmp_path: Path) -> None:
    assert load_node_config(write(tmp_path, ["01273", "04"])).areas == ["01273", "04"]


@pytest.mark.parametrize("bad", ["04/#", "+", "", "01 273"])
def test_an_area_code_that_cannot_be_a_topic_level_is_refused_with_its_place(
    tmp_path: Path, bad: str
) -> None:
    with pytest.raises(ConfigError, match=r"station\.yaml: areas\.1: String should match"):
        load_node_config(write(tmp_path, ["01273", bad]))
