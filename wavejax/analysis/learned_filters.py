"""What the front-end's filters learned (paper Sec. 4.3, Fig. 6).

Fig. 6 shows four SimpleNet filters before and after training, in time and frequency: the filters
with high centre frequencies "change significantly from their initial states compared to the
filter with low center frequency ... and their change in the frequency domain is adding more
passbands at low frequency". This module measures that for every filter of a bank:

* `frequency_response`, `filter_stats`: |H| of each kernel; its peak, centroid (power-weighted
  mean frequency) and equivalent rectangular bandwidth (integral of |H|^2 over max |H|^2);
* `drift`: per filter, the change of those between two banks, the relative weight change
  ||w - w0|| / ||w0|| and the share of |H|^2 below the filter's initial band (the "passbands at
  low frequency"), with a summary and a one-line verdict;
* `high_low_difference`: Fig. 6's first claim with a bootstrap interval over filters: mean relative
  weight change of the upper half of the bank (by initial centre) minus that of the lower half;
* `cumulative_response`: the bank's summed power response (which frequencies the front-end
  passes at all);
* `learned_spectrogram`: the front-end's `[windows, filters]` output for one waveform.

A model's filter bank comes from `wavejax.models.frontend_kernel`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from wavejax import errors
from wavejax.models import filters
from wavejax.reporting import stats as wavejax_stats

# Fig. 6's first claim and the per-filter measure `high_low_difference` compares.
HIGH_LOW_CLAIM = "Fig. 6: high-frequency filters change more than low ones"
HIGH_LOW_MEASURE = "relative_change"


def frequency_response(kernel: np.ndarray, sample_rate: float,
                       num_freqs: int = 1025) -> tuple[np.ndarray, np.ndarray]:
  """(freqs [W] Hz, |H| [W, F]) of a `[taps, F]` bank on W points from 0 to Nyquist."""
  kernel = _as_bank(kernel)
  n_fft = max(2 * (num_freqs - 1), kernel.shape[0])
  magnitude = np.abs(np.fft.rfft(kernel, n=n_fft, axis=0))
  return np.fft.rfftfreq(n_fft, 1.0 / sample_rate)[:num_freqs], magnitude[:num_freqs]


def _as_bank(kernel) -> np.ndarray:
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim == 3 and kernel.shape[1] == 1:
    kernel = kernel[:, 0]
  if kernel.ndim == 1:
    kernel = kernel[:, None]
  if kernel.ndim != 2:
    raise errors.ConfigError(f"a filter bank must be [taps, filters], got shape {kernel.shape}")
  return kernel


def filter_stats(kernel: np.ndarray, sample_rate: float) -> dict:
  """Per filter of a `[taps, F]` bank: `peak_hz`, `centroid_hz`, `bandwidth_hz` (ERB),
  `gain_db` (peak |H| in dB) as `[F]` arrays."""
  freqs, magnitude = frequency_response(kernel, sample_rate)
  power = magnitude**2
  step = freqs[1] - freqs[0]
  total = np.maximum(power.sum(axis=0), 1e-300)
  return {
      "peak_hz": freqs[np.argmax(power, axis=0)],
      "centroid_hz": (freqs[:, None] * power).sum(axis=0) / total,
      "bandwidth_hz": power.sum(axis=0) * step / np.maximum(power.max(axis=0), 1e-300),
      "gain_db": 10 * np.log10(np.maximum(power.max(axis=0), 1e-300)),
  }


def band_energy_below(kernel: np.ndarray, sample_rate: float, edges_hz: np.ndarray) -> np.ndarray:
  """Per filter, the share of its |H|^2 below `edges_hz[f]` Hz."""
  freqs, magnitude = frequency_response(kernel, sample_rate)
  power = magnitude**2
  below = freqs[:, None] < np.asarray(edges_hz)[None, :]
  return (power * below).sum(axis=0) / np.maximum(power.sum(axis=0), 1e-300)


def drift(initial: np.ndarray, trained: np.ndarray, sample_rate: float,
          initial_edges: np.ndarray | None = None) -> dict:
  """How each filter moved from `initial` to `trained` (both `[taps, F]`), Fig. 6 in numbers.

  Args:
    initial, trained: the banks before and after training.
    sample_rate: Hz.
    initial_edges: `[F, 2]` band edges of the initial bank (e.g. `filters.band_edges`); None:
      each initial filter's band is taken as its centroid +- half its bandwidth.

  Returns:
    {"per_filter": {name: [F] list}, "summary": {...}, "verdict": str}. Per filter: initial and
    trained centroid, peak and bandwidth (Hz), `centroid_shift_hz`, `relative_change`
    (||w - w0|| / ||w0||), `low_share_initial` / `low_share_trained` (share of |H|^2 below the
    initial band's lower edge). The summary gives the mean centroid shift, the share of filters
    whose centroid went down, the Spearman correlation of initial centre with relative change,
    and the upper vs lower half of the bank (by initial centre) for change and low-band share.
  """
  initial, trained = _as_bank(initial), _as_bank(trained)
  if initial.shape != trained.shape:
    raise errors.ConfigError(f"initial {initial.shape} and trained {trained.shape} banks differ")
  before, after = filter_stats(initial, sample_rate), filter_stats(trained, sample_rate)
  if initial_edges is None:
    low_edges = before["centroid_hz"] - before["bandwidth_hz"] / 2
  else:
    low_edges = np.asarray(initial_edges, np.float64)[:, 0]
  change = (np.linalg.norm(trained - initial, axis=0)
            / np.maximum(np.linalg.norm(initial, axis=0), 1e-300))
  per_filter = {
      "centroid_initial_hz": before["centroid_hz"], "centroid_trained_hz": after["centroid_hz"],
      "centroid_shift_hz": after["centroid_hz"] - before["centroid_hz"],
      "peak_initial_hz": before["peak_hz"], "peak_trained_hz": after["peak_hz"],
      "bandwidth_initial_hz": before["bandwidth_hz"],
      "bandwidth_trained_hz": after["bandwidth_hz"],
      "relative_change": change,
      "low_share_initial": band_energy_below(initial, sample_rate, low_edges),
      "low_share_trained": band_energy_below(trained, sample_rate, low_edges),
  }
  summary = _drift_summary(per_filter)
  return {"per_filter": {k: np.asarray(v).tolist() for k, v in per_filter.items()},
          "summary": summary, "verdict": drift_verdict(summary)}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
  if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return 0.0
  return float(stats.spearmanr(a, b).statistic)


def frequency_halves(centroids) -> tuple[np.ndarray, np.ndarray]:
  """(low, high) filter indices: the bank split at the median of `centroids` (each filter's
  initial centre frequency), by rank; with an odd count the middle filter goes to the upper
  half, and ties keep the bank's order."""
  order = np.argsort(np.asarray(centroids), kind="stable")
  half = len(order) // 2
  return order[:half], order[half:]


def high_low_difference(per_filter: dict, num_resamples: int = 10000, seed: int = 0,
                        confidence: float = 0.95) -> wavejax_stats.Difference:
  """Fig. 6's claim "high-frequency filters change more than low ones", with an interval.

  The measure is `drift`'s `relative_change`, ||w - w0|| / ||w0|| per filter: scale-free, so
  filters of different gains compare. The bank is split at the median initial centroid
  (`frequency_halves`, the halves of `drift`'s summary) and the result is
  `stats.group_difference(upper half, lower half)`: positive when the high filters changed more.

  Args:
    per_filter: `drift(...)["per_filter"]` (needs `centroid_initial_hz` and `relative_change`).
    num_resamples, seed, confidence: of the bootstrap.

  Raises:
    ConfigError: with fewer than 4 filters (each half needs two).
  """
  centroids = np.asarray(per_filter["centroid_initial_hz"], np.float64)
  change = np.asarray(per_filter[HIGH_LOW_MEASURE], np.float64)
  if len(centroids) < 4 or change.shape != centroids.shape:
    raise errors.ConfigError(f"Fig. 6 claim: a bank of {len(centroids)} filters cannot be split "
                             "into two halves of two or more; analyse a front-end of 4 or more "
                             "filters")
  low, high = frequency_halves(centroids)
  return wavejax_stats.group_difference(change[high], change[low], num_resamples, seed,
                                        confidence)


def _drift_summary(p: dict) -> dict:
  low, high = frequency_halves(p["centroid_initial_hz"])
  half = len(low)
  gain = p["low_share_trained"] - p["low_share_initial"]
  return {
      "num_filters": int(len(low) + len(high)),
      "mean_centroid_shift_hz": float(np.mean(p["centroid_shift_hz"])),
      "share_moved_down": float(np.mean(p["centroid_shift_hz"] < 0)),
      "mean_relative_change": float(np.mean(p["relative_change"])),
      "spearman_centre_vs_change": _spearman(p["centroid_initial_hz"], p["relative_change"]),
      "spearman_centre_vs_low_share_gain": _spearman(p["centroid_initial_hz"], gain),
      "relative_change_low_half": float(np.mean(p["relative_change"][low])) if half else 0.0,
      "relative_change_high_half": float(np.mean(p["relative_change"][high])),
      "low_share_gain_low_half": float(np.mean(gain[low])) if half else 0.0,
      "low_share_gain_high_half": float(np.mean(gain[high])),
      "mean_bandwidth_change_hz": float(np.mean(p["bandwidth_trained_hz"]
                                               - p["bandwidth_initial_hz"])),
  }


# The upper half's filters add low passbands when their share of |H|^2 below the initial band
# grows by more than 5 percentage points.
LOW_SHARE_MARGIN = 0.05


def drift_verdict(summary: dict) -> str:
  """Fig. 6's second claim, measured: the high filters' change adds passbands at low frequency.
  Its first claim (high filters change more than low ones) is ruled with an interval by
  `high_low_difference`; this line gives its means only."""
  lower = summary["low_share_gain_high_half"] > LOW_SHARE_MARGIN
  return (f"Fig. 6, low passbands {'added' if lower else 'not added'}: the upper-half filters' "
          f"share of |H|^2 below their initial band grew by "
          f"{summary['low_share_gain_high_half']:+.3f} (lower half "
          f"{summary['low_share_gain_low_half']:+.3f}; Spearman rho centre vs gain "
          f"{summary['spearman_centre_vs_low_share_gain']:+.2f}); mean centroid shift "
          f"{summary['mean_centroid_shift_hz']:+.0f} Hz, {summary['share_moved_down']:.0%} of "
          f"filters moved down; relative change ||w - w0|| / ||w0|| upper half "
          f"{summary['relative_change_high_half']:.3f} vs lower half "
          f"{summary['relative_change_low_half']:.3f} (rho centre vs change "
          f"{summary['spearman_centre_vs_change']:+.2f}; its verdict below)")


def cumulative_response(kernel: np.ndarray, sample_rate: float,
                        num_freqs: int = 1025) -> tuple[np.ndarray, np.ndarray]:
  """(freqs [W], sum over filters of |H|^2 [W]): how much the whole bank passes each frequency."""
  freqs, magnitude = frequency_response(kernel, sample_rate, num_freqs)
  return freqs, (magnitude**2).sum(axis=1)


def cumulative_gain_by_band(initial: np.ndarray, trained: np.ndarray, sample_rate: float,
                            edges_hz=(0.0, 1000.0, 2000.0, 4000.0, 8000.0)) -> dict:
  """`{"lo-hi Hz": dB}`: how much the bank's summed power response changed in each band (mean of
  10 log10 trained / initial over the band); positive where the trained bank passes more."""
  freqs, before = cumulative_response(initial, sample_rate)
  _, after = cumulative_response(trained, sample_rate)
  change = 10 * np.log10(np.maximum(after, 1e-30) / np.maximum(before, 1e-30))
  out = {}
  for lo, hi in zip(edges_hz[:-1], edges_hz[1:]):
    inside = (freqs >= lo) & (freqs < hi) if hi < sample_rate / 2 else (freqs >= lo)
    if inside.any():
      out[f"{lo:g}-{hi:g} Hz"] = float(np.mean(change[inside]))
  return out


def cumulative_verdict(gains: dict) -> str:
  """One line: where the trained bank gained or lost sensitivity (Sec. 4.3: toward low
  frequencies)."""
  bands = list(gains)
  toward_low = gains[bands[0]] > max(gains[b] for b in bands[1:]) if len(bands) > 1 else False
  return (f"Sec. 4.3 ('filters find lower frequencies more informative') "
          f"{'holds' if toward_low else 'does not hold'}: the bank's summed response changed by "
          + ", ".join(f"{band} {value:+.1f} dB" for band, value in gains.items()))


def select_filters(num_filters: int, count: int = 4) -> list[int]:
  """`count` filter indices spread from the lowest to the highest band (Fig. 6 shows 4)."""
  count = min(count, num_filters)
  return sorted({int(round(i)) for i in np.linspace(0, num_filters - 1, count + 2)[1:-1]}) \
      if count < num_filters else list(range(num_filters))


def initial_band_edges(model_config) -> np.ndarray | None:
  """`[F, 2]` band edges of an FIR-initialised front-end (`init="fir"`), else None."""
  frontend = model_config.get("frontend", {})
  if frontend.get("init", None) != "fir" or "num_filters" not in frontend:
    return None
  return filters.band_edges(frontend["num_filters"], model_config["sample_rate"],
                            frontend.get("fir_scale", "linear"), frontend.get("fir_low_hz", 0.0),
                            frontend.get("fir_high_hz", None))


def learned_spectrogram(model: nn.Module, variables: dict, waveform: np.ndarray) -> np.ndarray:
  """The front-end's `[windows, filters]` output for one `[T]` waveform (the "learned
  spectrogram" of Sec. 3: one band energy per filter per 40 ms window for SimpleNet)."""
  batch = jnp.asarray(np.asarray(waveform, np.float32)[None])
  features = model.apply(variables, batch, method=lambda module, x: module.frontend(x))
  return np.asarray(jax.device_get(features))[0]
