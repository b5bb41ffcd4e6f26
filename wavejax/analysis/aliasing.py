"""Pooling between convolutions aliases (paper Sec. 2.2.3, Fig. 3), measured.

Temporal pooling by p is a downsampling to fs / p: whatever the signal holds above the new Nyquist
fs / (2p) folds onto lower frequencies, where the next convolution cannot tell it from the real
low-frequency content. This module pushes test signals through conv -> pool -> conv -> ... stacks
and reports, per stage, the spectra before and after the pooling and the ALIASED FRACTION: the
share of the pooled output's power at frequencies where the stage's filtered input had none
(below -`floor_db` dB of its strongest component). The comparison is made frame by frame (STFT
bins of equal width and time span before and after pooling), so the folded copy of a chirp counts
as aliased even though the chirp visits every frequency at some time. Max pooling adds harmonics
too (it is not linear); those count as aliased as well, being equally foreign to the input, and
no low-pass before the pool removes them.

Per stage three numbers:
  * `aliased_fraction`: aliased power / output power, new at this stage (mask: the spectrum of
    this stage's convolution output, before pooling);
  * `cumulative_aliased_fraction`: the same against an alias-free reference path that replaces
    every pooling by an ideal low-pass and decimation (mask: the reference's spectrum), i.e. all
    aliasing so far;
  * `aliased_to_input`: aliased power / power of the stage's filtered input, which stays small
    when an anti-aliasing low-pass removed the content before pooling.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage, signal

from wavejax import errors
from wavejax.analysis import signals

POOLS = ("max", "avg", "stride", "none")
FLOOR_DB = 50.0
FRAME = 256  # STFT frame length at the pooled rate (the unpooled frame is `factor` times longer)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage: an optional 1-D filter, then an optional anti-aliasing low-pass, then pooling.

  Attributes:
    kernel: FIR taps applied ('same' length, centred) at the stage's input rate, or None.
    pool: "max", "avg", "stride" (keep every p-th sample) or "none".
    factor: pooling size and stride p.
    antialias: low-pass below the new Nyquist before pooling (see `antialias_filter`).
  """
  kernel: np.ndarray | None = None
  pool: str = "max"
  factor: int = 2
  antialias: bool = False

  def __post_init__(self):
    if self.pool not in POOLS:
      raise errors.ConfigError(f"Stage.pool={self.pool!r}: choose one of {', '.join(POOLS)}")
    if self.factor < 1:
      raise errors.ConfigError(f"Stage.factor must be >= 1, got {self.factor}")


def pool(x: np.ndarray, factor: int, kind: str) -> np.ndarray:
  """Non-overlapping pooling of a 1-D signal by `factor`; a tail shorter than a block is dropped."""
  if kind == "none" or factor == 1:
    return np.asarray(x, np.float64)
  count = len(x) // factor
  blocks = np.asarray(x[:count * factor], np.float64).reshape(count, factor)
  if kind == "max":
    return blocks.max(axis=1)
  if kind == "avg":
    return blocks.mean(axis=1)
  if kind == "stride":
    return blocks[:, 0]
  raise errors.ConfigError(f"pool={kind!r}: choose one of {', '.join(POOLS)}")


def antialias_filter(factor: int, num_taps: int = 127) -> np.ndarray:
  """A Kaiser-window low-pass with its stop band (> 80 dB down) starting at the new Nyquist.

  Cut-off 0.85 x the new Nyquist, in units of the input Nyquist.
  """
  return signal.firwin(num_taps, 0.85 / factor, window=("kaiser", 8.0))


def filter_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Correlation with `kernel`, centred, output as long as `x` (zero padding)."""
  return signal.correlate(np.asarray(x, np.float64), np.asarray(kernel, np.float64), mode="same")


def ideal_decimate(x: np.ndarray, factor: int) -> np.ndarray:
  """Brick-wall low-pass at the new Nyquist (FFT) then every `factor`-th sample: no aliasing."""
  if factor == 1:
    return np.asarray(x, np.float64)
  count = len(x) // factor
  x = np.asarray(x[:count * factor], np.float64)
  spectrum = np.fft.rfft(x)
  spectrum[count // 2 + 1:] = 0.0
  return np.fft.irfft(spectrum, len(x))[::factor]


def present_mask(power: np.ndarray, floor_db: float = FLOOR_DB,
                 peak: float | None = None) -> np.ndarray:
  """Time-frequency bins of a `[frames, bins]` power within `floor_db` of `peak` (default: the
  strongest bin), widened by one frame and two bins against window leakage."""
  peak = float(power.max()) if peak is None else peak
  mask = power > peak * 10**(-floor_db / 10.0)
  return ndimage.binary_dilation(mask, structure=np.ones((3, 5), bool))


def _framing(post_length: int) -> tuple[int, int]:
  frame = min(FRAME, post_length)
  return frame, max(1, frame // 4)


def aliased_power(pre: np.ndarray, post: np.ndarray, factor: int, floor_db: float = FLOOR_DB,
                  reference: np.ndarray | None = None) -> tuple[float, float]:
  """(mean power of `post` in time-frequency bins absent from the mask, mean power of `post`).

  `pre` is the signal before pooling by `factor`, `post` after. The mask is the bins where
  `pre` has power (frame by frame, so a chirp's folded copy is caught where a whole-signal
  spectrum would count it as present), or, given `reference` (a signal at the rate of `post`),
  the bins where `reference` has power above `floor_db` below the stronger of the two peaks.
  """
  frame, hop = _framing(len(post))
  post_power = signals.stft_power(post, frame, hop)
  pre_power = signals.stft_power(pre, frame * factor, hop * factor)
  peak = float(pre_power.max())  # over ALL of pre's bins: content above the new Nyquist counts
  if reference is None:
    mask_power = pre_power[:, :frame // 2 + 1]
  else:
    mask_power = signals.stft_power(reference, frame, hop)
    peak = max(float(mask_power.max()), peak)
  count = min(len(post_power), len(mask_power))
  post_power = post_power[:count]
  mask = present_mask(mask_power[:count], floor_db, peak)
  return float(post_power[~mask].sum() / count), float(post_power.sum() / count)


def aliased_fraction(pre_pool: np.ndarray, post_pool: np.ndarray, factor: int,
                     floor_db: float = FLOOR_DB) -> float:
  """Share of `post_pool`'s power at time-frequency bins where `pre_pool` (the same signal
  before pooling by `factor`) has nothing above -`floor_db` dB: the power pooling created by
  folding (aliasing) or distortion (max pooling's harmonics)."""
  aliased, total = aliased_power(pre_pool, post_pool, factor, floor_db)
  return aliased / total if total > 0 else 0.0


def analyze_stack(x: np.ndarray, sample_rate: float, stages: list[Stage],
                  floor_db: float = FLOOR_DB) -> list[dict]:
  """Runs `x` through `stages`; per stage its rates, signals, spectra and aliasing numbers.

  Returns one dict per stage: `rate_in`, `rate_out` (Hz), `signal_pre` (the stage's filtered
  input, before the anti-aliasing filter and the pooling) and `signal_post` (after pooling),
  `freqs_pre`/`power_pre` and `freqs_post`/`power_post` (their whole-signal spectra),
  `aliased_fraction`, `cumulative_aliased_fraction` and `aliased_to_input` (see the module
  docstring). When an anti-aliasing filter removed nearly everything, the fractions describe
  the little that is left; read `aliased_to_input` then.
  """
  out, reference, rate = np.asarray(x, np.float64), np.asarray(x, np.float64), float(sample_rate)
  report = []
  for stage in stages:
    factor = stage.factor if stage.pool != "none" else 1
    if stage.kernel is not None:
      out, reference = filter_same(out, stage.kernel), filter_same(reference, stage.kernel)
    pooled_input = filter_same(out, antialias_filter(factor)) if stage.antialias else out
    post = pool(pooled_input, factor, stage.pool)
    pre = out[:len(post) * factor]
    reference = ideal_decimate(reference, factor)[:len(post)]
    aliased, total = aliased_power(pre, post, factor, floor_db)
    cumulative, _ = aliased_power(pre, post, factor, floor_db, reference=reference)
    freqs_pre, power_pre = signals.power_spectrum(pre, rate)
    freqs_post, power_post = signals.power_spectrum(post, rate / factor)
    report.append({
        "rate_in": rate, "rate_out": rate / factor, "pool": stage.pool, "factor": factor,
        "antialias": stage.antialias, "signal_pre": pre, "signal_post": post,
        "freqs_pre": freqs_pre, "power_pre": power_pre,
        "freqs_post": freqs_post, "power_post": power_post,
        "aliased_fraction": aliased / total if total > 0 else 0.0,
        "cumulative_aliased_fraction": cumulative / total if total > 0 else 0.0,
        "aliased_to_input": aliased / max(float(np.mean(pre**2)), 1e-300),
    })
    out, rate = post, rate / factor
  return report


SCALARS = ("rate_in", "rate_out", "pool", "factor", "antialias", "aliased_fraction",
           "cumulative_aliased_fraction", "aliased_to_input")


def scalars(stage: dict) -> dict:
  """The JSON-friendly numbers of one `analyze_stack` stage."""
  return {key: stage[key] for key in SCALARS}


def probe_signals(sample_rate: float, num_samples: int, rng: np.random.Generator) -> dict:
  """The signals of the pooling sweep: tones below and above the post-pool Nyquist (pool by 2),
  their sum, a full-band chirp and band-limited noise above the post-pool Nyquist."""
  nyquist = sample_rate / 2.0
  return {
      "tone_low": signals.tones([nyquist / 8], sample_rate, num_samples),
      "tone_high": signals.tones([nyquist * 3 / 4], sample_rate, num_samples),
      "tones_low_high": signals.tones([nyquist / 8, nyquist * 3 / 4], sample_rate, num_samples),
      "chirp": signals.chirp(0.0, nyquist, sample_rate, num_samples),
      "noise_high": signals.band_noise(nyquist * 5 / 8, nyquist * 7 / 8, sample_rate,
                                       num_samples, rng),
  }


def pooling_sweep(probes: dict, sample_rate: float, factor: int = 2,
                  pools=("max", "avg", "stride"), floor_db: float = FLOOR_DB) -> dict:
  """One pooling by `factor` of every signal of `probes`, each pool kind, with and without an
  anti-aliasing low-pass: `{signal: {pool: {"plain"|"antialias": {aliased_fraction,
  aliased_to_input}}}}`."""
  table = {}
  for name, x in probes.items():
    table[name] = {}
    for kind in pools:
      table[name][kind] = {}
      for label, antialias in (("plain", False), ("antialias", True)):
        stage = analyze_stack(x, sample_rate, [Stage(None, kind, factor, antialias)], floor_db)[0]
        table[name][kind][label] = {"aliased_fraction": stage["aliased_fraction"],
                                    "aliased_to_input": stage["aliased_to_input"]}
  return table


def demo_stages(sample_rate: float = 16000.0, pool_kind: str = "max", antialias: bool = False,
                taps: int = 101) -> list[Stage]:
  """Fig. 3's conv -> pool -> conv network, one pooling deeper, each band straddling the next
  Nyquist: conv (band-pass fs/16-3fs/8) -> pool 2 -> conv (fs/16-3fs/16, at fs/2) -> pool 2 ->
  conv (fs/32-3fs/32, at fs/4). At 16 kHz: 1-6 kHz, 1-3 kHz, 0.5-1.5 kHz."""
  fs = sample_rate
  return [
      Stage(signal.firwin(taps, [fs / 16, 3 * fs / 8], pass_zero=False, fs=fs), pool_kind, 2,
            antialias),
      Stage(signal.firwin(taps, [fs / 16, 3 * fs / 16], pass_zero=False, fs=fs / 2), pool_kind,
            2, antialias),
      Stage(signal.firwin(taps, [fs / 32, 3 * fs / 32], pass_zero=False, fs=fs / 4), "none", 1,
            antialias),
  ]


def stack_report(x: np.ndarray, sample_rate: float, pools=("max", "avg", "stride"),
                 floor_db: float = FLOOR_DB) -> dict:
  """`analyze_stack` of the `demo_stages` network for each pool kind, with and without an
  anti-aliasing low-pass: `{"<pool>" | "<pool>+antialias": [stage dicts]}`."""
  report = {}
  for kind in pools:
    for antialias in (False, True):
      key = f"{kind}+antialias" if antialias else kind
      report[key] = analyze_stack(x, sample_rate, demo_stages(sample_rate, kind, antialias),
                                  floor_db)
  return report


def aliasing_verdict(sweep: dict) -> str:
  """One line from `pooling_sweep`: is a tone below the post-pool Nyquist clean, one above it
  aliased, and does the anti-aliasing low-pass remove it?"""
  low, high = sweep["tone_low"], sweep["tone_high"]
  kinds = list(low)
  linear = [k for k in kinds if k != "max"]
  worst_low = max((low[k]["plain"]["aliased_fraction"] for k in linear), default=0.0)
  high_plain = {k: high[k]["plain"]["aliased_fraction"] for k in kinds}
  high_aa = max(high[k]["antialias"]["aliased_to_input"] for k in kinds)
  holds = worst_low < 0.01 and min(high_plain.values()) > 0.5 and high_aa < 1e-3
  max_note = (f", {low['max']['plain']['aliased_fraction']:.1e} for max (its harmonics)"
              if "max" in low else "")
  return (f"Sec. 2.2.3 {'holds' if holds else 'does not hold'}: pooling by 2 leaves a tone below "
          f"the new Nyquist clean (aliased fraction <= {worst_low:.1e} for linear pools"
          f"{max_note}) but folds a tone above it "
          f"(aliased fraction " + ", ".join(f"{k} {v:.2f}" for k, v in high_plain.items()) +
          f"); a low-pass before the pool cuts the aliased power to <= {high_aa:.1e} of the input")
