"""Test signals and power spectra for the analyses of Sec. 2 (Figs. 1-3).

All signals are float64 numpy arrays; randomness comes only from the `numpy.random.Generator`
passed in. `power_spectrum` uses a Blackman-Harris window (side lobes below -92 dB), so a
component's leakage stays within a few bins and an empty band reads as empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal

from wavejax import errors


def _check_count(num_samples: int) -> int:
  if int(num_samples) < 2:
    raise errors.ConfigError(f"num_samples must be >= 2, got {num_samples!r}")
  return int(num_samples)


def _check_band(low_hz: float, high_hz: float, sample_rate: float) -> None:
  if not 0.0 <= low_hz < high_hz <= sample_rate / 2.0:
    raise errors.ConfigError(
        f"band [{low_hz}, {high_hz}] Hz must satisfy 0 <= low < high <= Nyquist "
        f"({sample_rate / 2.0:g} Hz)")


def time_axis(num_samples: int, sample_rate: float) -> np.ndarray:
  return np.arange(_check_count(num_samples)) / float(sample_rate)


def tones(freqs_hz: Sequence[float], sample_rate: float, num_samples: int,
          amplitudes: Sequence[float] | None = None,
          phases: Sequence[float] | None = None) -> np.ndarray:
  """A sum of cosines: sum_i a_i cos(2 pi f_i t + phi_i)."""
  t = time_axis(num_samples, sample_rate)
  freqs = np.asarray(freqs_hz, np.float64)
  amplitudes = np.ones_like(freqs) if amplitudes is None else np.asarray(amplitudes, np.float64)
  phases = np.zeros_like(freqs) if phases is None else np.asarray(phases, np.float64)
  if not freqs.shape == amplitudes.shape == phases.shape:
    raise errors.ConfigError("freqs_hz, amplitudes and phases must have the same length")
  return np.sum(amplitudes[:, None] * np.cos(2 * np.pi * freqs[:, None] * t + phases[:, None]),
                axis=0)


def chirp(f0_hz: float, f1_hz: float, sample_rate: float, num_samples: int) -> np.ndarray:
  """A linear chirp sweeping f0 -> f1 over the whole signal, unit amplitude."""
  t = time_axis(num_samples, sample_rate)
  return signal.chirp(t, f0=f0_hz, t1=t[-1], f1=f1_hz, method="linear")


def band_noise(low_hz: float, high_hz: float, sample_rate: float, num_samples: int,
               rng: np.random.Generator) -> np.ndarray:
  """Gaussian noise with a flat spectrum in [low_hz, high_hz] and none outside; unit RMS.

  Made in the frequency domain (white noise, FFT, bins outside the band zeroed), so the band
  edges are exact to one bin of `sample_rate / num_samples` Hz.
  """
  num_samples = _check_count(num_samples)
  _check_band(low_hz, high_hz, sample_rate)
  spectrum = np.fft.rfft(rng.standard_normal(num_samples))
  freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
  spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0.0
  noise = np.fft.irfft(spectrum, num_samples)
  return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-30)


def power_spectrum(x: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
  """(freqs [N // 2 + 1] Hz, power) of a 1-D signal, Blackman-Harris windowed.

  Scaled so that `power.sum()` is about the mean power `mean(x ** 2)` of a stationary signal;
  the bin spacing is `sample_rate / len(x)`, so a signal and its decimation by p (sampled at
  `sample_rate / p`, `len(x) / p` samples) share their bins up to the lower Nyquist.
  """
  x = np.asarray(x, np.float64)
  window = signal.windows.blackmanharris(len(x), sym=False)
  spectrum = np.abs(np.fft.rfft(x * window))**2 / (np.sum(window**2) * len(x))
  spectrum[1:len(x) // 2 + (len(x) % 2)] *= 2.0  # one-sided: fold the negative frequencies
  return np.fft.rfftfreq(len(x), 1.0 / sample_rate), spectrum


def stft_power(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
  """`[frames, frame // 2 + 1]` power of Blackman-Harris windowed frames of `x` (VALID framing).

  Scaled like `power_spectrum` per frame. Frames of a signal and of its decimation by p share
  their time spans and bins when `frame` and `hop` are p times larger for the undecimated one.
  """
  x = np.asarray(x, np.float64)
  if len(x) < frame:
    raise errors.ConfigError(f"signal of {len(x)} samples is shorter than one frame of {frame}")
  count = (len(x) - frame) // hop + 1
  frames = x[hop * np.arange(count)[:, None] + np.arange(frame)[None, :]]
  window = signal.windows.blackmanharris(frame, sym=False)
  power = np.abs(np.fft.rfft(frames * window, axis=1))**2 / (np.sum(window**2) * frame)
  power[:, 1:frame // 2 + (frame % 2)] *= 2.0
  return power
