"""A forest plot of claims: each claim's difference with its interval, against zero.

One row per claim, top to bottom in the given order: the observed difference as a dot, its
interval as a horizontal bar, coloured by verdict (green supported, red contradicted, grey
undecided; `wavejax.stats.verdict`, or a verdict given with the claim), the claim's short name on
the left and the numbers on the right, and a vertical line at zero. matplotlib is optional
(`pip install 'wavejax[plots]'`); without it `forest_plot` raises
`wavejax.reporting.plots.PlotsUnavailableError`.
"""

from __future__ import annotations

import io
import math
import pathlib
from collections.abc import Mapping, Sequence

from wavejax import atomic, errors
from wavejax.reporting import plots, stats

COLOURS = {"supported": "tab:green", "contradicted": "tab:red", "undecided": "tab:gray"}
DPI = 120
# Figure size in inches: fixed width; height grows with the number of claims.
WIDTH_IN = 10.0
BASE_HEIGHT_IN = 1.2
ROW_HEIGHT_IN = 0.4


def figure_size(num_claims: int) -> tuple[float, float]:
  """The figure's size in inches (the PNG is this times `DPI` pixels)."""
  return (WIDTH_IN, BASE_HEIGHT_IN + ROW_HEIGHT_IN * num_claims)


def _pyplot():
  if not plots.available():
    raise plots.PlotsUnavailableError(
        f"matplotlib is not installed; for the forest plot {plots.INSTALL_HINT}")
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _checked(claims) -> list[tuple[str, stats.Difference, str]]:
  items = list(claims.items() if isinstance(claims, Mapping) else claims)
  if not items:
    raise errors.ResultsError("forest plot: no claims to draw; give (name, Difference) pairs")
  items = [(item[0], item[1], item[2] if len(item) > 2 else item[1].verdict) for item in items]
  for name, result, verdict in items:
    if verdict not in COLOURS:
      raise errors.ResultsError(f"forest plot: claim {name!r} has verdict {verdict!r}; expected "
                                f"one of {', '.join(COLOURS)}")
    numbers = (result.difference, result.low, result.high)
    if not all(math.isfinite(x) for x in numbers):
      raise errors.ResultsError(f"forest plot: claim {name!r} has difference "
                                f"{result.difference} and "
                         f"interval [{result.low}, {result.high}]; every claim needs finite "
                         "numbers: recompute it or leave it out")
  return items


def forest_plot(claims: Sequence[tuple] | Mapping[str, stats.Difference], path,
                title: str = "", xlabel: str = "difference (A - B)") -> pathlib.Path:
  """Draws the claims into `path` (PNG, or the format its suffix names), atomically; returns the
  path. `claims`: (short name, `stats.Difference`) pairs, or triples that add the verdict to show
  (for claims not read against zero, e.g. equivalence within a margin), or a mapping of pairs."""
  items = _checked(claims)
  plt = _pyplot()
  figure, ax = plt.subplots(figsize=figure_size(len(items)), dpi=DPI)
  rows = list(range(len(items)))[::-1]  # first claim on top
  for row, (_, result, verdict) in zip(rows, items):
    colour = COLOURS[verdict]
    ax.plot([result.low, result.high], [row, row], color=colour, lw=2.5, solid_capstyle="butt")
    ax.plot(result.difference, row, "o", color=colour, ms=6)
    ax.annotate(f"{result.difference:+.3g} [{result.low:+.3g}, {result.high:+.3g}] "
                f"{verdict}", xy=(1.01, row), xycoords=("axes fraction", "data"),
                va="center", fontsize=8, color=colour)
  ax.axvline(0.0, color="k", lw=0.8, ls="--")
  left = min(0.0, *(result.low for _, result, _ in items))
  right = max(0.0, *(result.high for _, result, _ in items))
  margin = 0.05 * (right - left) or 0.01
  ax.set_xlim(left - margin, right + margin)  # zero always in view
  ax.set_yticks(rows, [name for name, _, _ in items], fontsize=9)
  ax.set_ylim(-0.6, len(items) - 0.4)
  ax.set(xlabel=xlabel, title=title or f"Differences with {_confidence(items)} intervals")
  ax.grid(axis="x", alpha=0.3)
  figure.tight_layout()
  buffer = io.BytesIO()
  fmt = pathlib.Path(path).suffix.lstrip(".").lower() or "png"
  figure.savefig(buffer, format=fmt, dpi=DPI)
  plt.close(figure)
  return atomic.atomic_write(path, buffer.getvalue())


def _confidence(items) -> str:
  levels = sorted({result.confidence for _, result, _ in items})
  return "/".join(f"{100 * c:g}%" for c in levels)
