"""The forest plot of claims."""

import os
import struct

import numpy as np
import pytest

from wavejax import errors
from wavejax.reporting import forest_plot, plots, stats


def claim(difference, low, high):
  return stats.Difference("wa", difference, low, high, difference, 0.0, 0.95, 1000,
                          {"utterances": 100})


def png_size(path):
  """(width, height) in pixels from the PNG's IHDR chunk."""
  with open(path, "rb") as f:
    header = f.read(24)
  assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
  return struct.unpack(">II", header[16:24])


def pixels_of(path, colour_name):
  import matplotlib.colors  # pylint: disable=g-import-not-at-top
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  image = matplotlib.image.imread(path)[..., :3]
  target = np.array(matplotlib.colors.to_rgb(colour_name))
  return int((np.abs(image - target).max(axis=-1) < 2 / 255).sum())


@pytest.mark.parametrize("num_claims", [2, 5])
def test_the_png_is_written_at_its_size_and_coloured_by_verdict(tmp_path, num_claims):
  pytest.importorskip("matplotlib")
  claims = [("A beats B", claim(0.1, 0.05, 0.15)), ("C beats D", claim(-0.01, -0.04, 0.02))]
  claims += [(f"claim {i}", claim(0.02 * i, 0.01 * i, 0.03 * i)) for i in range(num_claims - 2)]
  path = forest_plot.forest_plot(claims, tmp_path / "claims.png", title="claims")
  assert path == tmp_path / "claims.png"
  width, height = forest_plot.figure_size(num_claims)
  assert png_size(path) == (round(width * forest_plot.DPI), round(height * forest_plot.DPI))
  assert pixels_of(path, forest_plot.COLOURS["supported"]) > 20
  assert pixels_of(path, forest_plot.COLOURS["undecided"]) > 20
  assert pixels_of(path, forest_plot.COLOURS["contradicted"]) == 0
  assert os.listdir(tmp_path) == ["claims.png"]


def test_a_mapping_of_claims_and_a_contradicted_one(tmp_path):
  pytest.importorskip("matplotlib")
  path = forest_plot.forest_plot({"worse": claim(-0.2, -0.3, -0.1)}, tmp_path / "one.png")
  assert png_size(path)[1] == round(forest_plot.figure_size(1)[1] * forest_plot.DPI)
  assert pixels_of(path, forest_plot.COLOURS["contradicted"]) > 20


@pytest.mark.parametrize("bad", [claim(np.nan, -0.1, 0.1), claim(0.0, -np.inf, 0.1)])
def test_claims_without_finite_numbers_are_refused(tmp_path, bad):
  claims = [("fine", claim(0.1, 0.0, 0.2)), ("broken", bad)]
  with pytest.raises(errors.ResultsError, match="claim 'broken'") as info:
    forest_plot.forest_plot(claims, tmp_path / "claims.png")
  assert "\n" not in str(info.value)
  with pytest.raises(errors.ResultsError, match="no claims"):
    forest_plot.forest_plot([], tmp_path / "claims.png")
  assert not os.listdir(tmp_path)


def test_without_matplotlib_it_says_how_to_install_it(monkeypatch, tmp_path):
  monkeypatch.setattr(plots, "available", lambda: False)
  with pytest.raises(plots.PlotsUnavailableError, match=r"pip install 'wavejax\[plots\]'") as info:
    forest_plot.forest_plot([("a", claim(0.1, 0.0, 0.2))], tmp_path / "claims.png")
  assert "\n" not in str(info.value)


def test_a_verdict_given_with_a_claim_colours_its_row(tmp_path):
  """An equivalence claim is read against its margin, not zero: its own verdict sets the colour."""
  pytest.importorskip("matplotlib")
  within = claim(0.01, -0.02, 0.025)  # undecided against zero, within a 3-point margin
  path = forest_plot.forest_plot([("within 3 points", within, "supported")],
                                 tmp_path / "one.png")
  assert pixels_of(path, forest_plot.COLOURS["supported"]) > 20
  against_zero = forest_plot.forest_plot([("within 3 points", within)], tmp_path / "zero.png")
  assert pixels_of(against_zero, forest_plot.COLOURS["supported"]) == 0
  with pytest.raises(errors.ResultsError, match="verdict 'maybe'"):
    forest_plot.forest_plot([("x", within, "maybe")], tmp_path / "two.png")
