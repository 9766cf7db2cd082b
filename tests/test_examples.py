"""The example scripts run end to end at tiny sizes (``--quick``) and write their PNGs."""

import importlib
import pathlib
import sys

import matplotlib
import pytest

matplotlib.use("Agg")

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

PICTURES = {
    "curve_profile": ["curve_profile.png"],
    "heteroscedastic_regression": ["regression_intervals.png"],
    "loss_planes": ["simplex_face.png", "complex_plane.png"],
    "volume_connectors": ["volume_connectors.png"],
    "spirals_diversity": ["spirals_diversity.png"],
}


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_example_runs_quickly_and_writes_its_pictures(name, tmp_path):
    module = importlib.import_module(name)
    module.main(["--quick", "--out", str(tmp_path)])
    for picture in PICTURES[name]:
        written = tmp_path / picture
        assert written.stat().st_size > 1000, picture
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt

    plt.close("all")
    sys.modules.pop(name, None)
