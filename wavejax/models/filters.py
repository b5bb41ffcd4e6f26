"""Band-pass FIR filter banks and the initialisers of SimpleNet's convolution (paper Sec. 3).

SimpleNet's only convolution is initialised with "a series of non-overlapping bandpass filters with
the
center frequency evenly distributed from 0Hz to 8000Hz" (paper Sec. 4.1): 64 windowed-FIR filters of
256
taps at 16 kHz. Sec. 3 suggests task-specific variants (denser low bands for speech, a mel-scale
bank);
`band_edges` lays out the bands for each scale and `fir_filterbank` designs the filters.

The paper's own code (initializer/myFilterForTest.m) used MATLAB `fir1(255, [lo, lo + 0.95/64])` for
`lo = 0.0001 : 0.95/64 : 0.95` (edges normalised to Nyquist), i.e. 64 band-passes of 118.75 Hz
covering
0.8-7600.8 Hz. `fir_filterbank(64, 256, 16000, low_hz=0.8, high_hz=7600.8)` designs exactly those
filters; `high_hz=0.95 * 8000` gives the same layout starting at 0 Hz.

Filters are designed with the window method (`scipy.signal.firwin`, Hamming window) and scaled like
`fir1`: unit gain at DC for the low-pass, at Nyquist for the high-pass and at the band centre for a
band-pass. With 256 taps the Hamming transition band is about 3.3 * fs / 256 = 206 Hz wide, wider
than
the 125 Hz bands of the paper's bank, so passbands are rounded rather than flat; a band narrower
than
that (e.g. the lowest mel bands) is not resolved and its filter is effectively wider than the band.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import signal

from wavejax.errors import ConfigError

SCALES = ("linear", "mel", "speech")

# The `speech` scale is linear in frequency with SPEECH_DENSITY times as many bands per Hz below
# SPEECH_KNEE_HZ as above it. Over 0-8 kHz that puts 3/4 of the bands in the 0-4 kHz speech band,
# where
# the formants F1-F3 and most speech energy lie (the band kept by wideband telephony), while every
# band
# below the knee keeps the same width (83.3 Hz for 64 bands), unlike mel whose lowest bands (28 Hz
# for 64
# bands) are far narrower than a 256-tap filter can resolve.
SPEECH_KNEE_HZ = 4000.0
SPEECH_DENSITY = 3.0

Initializer = Callable[..., jax.Array]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
  """HTK mel scale."""
  return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
  return 700.0 * (10.0**(mel / 2595.0) - 1.0)


def _hz_to_speech(hz: np.ndarray) -> np.ndarray:
  """Piecewise-linear warp, SPEECH_DENSITY times steeper below SPEECH_KNEE_HZ."""
  above = (hz - SPEECH_KNEE_HZ) / SPEECH_DENSITY + SPEECH_KNEE_HZ
  return np.where(hz <= SPEECH_KNEE_HZ, hz, above)


def _speech_to_hz(warped: np.ndarray) -> np.ndarray:
  above = (warped - SPEECH_KNEE_HZ) * SPEECH_DENSITY + SPEECH_KNEE_HZ
  return np.where(warped <= SPEECH_KNEE_HZ, warped, above)


def _identity(x: np.ndarray) -> np.ndarray:
  return x


# scale name -> (Hz to warped axis, warped axis to Hz); band edges are equally spaced on the warped
# axis.
_WARPS = {
    "linear": (_identity, _identity),
    "mel": (_hz_to_mel, _mel_to_hz),
    "speech": (_hz_to_speech, _speech_to_hz),
}


def _positive_int(value, name: str, minimum: int) -> int:
  """`value` as an int >= minimum, or a ConfigError naming `name`."""
  try:
    if isinstance(value, bool):
      raise TypeError
    value = operator.index(value)
  except TypeError:
    raise ConfigError(f"{name} must be an integer, got {value!r}") from None
  if value < minimum:
    raise ConfigError(f"{name} must be >= {minimum}, got {value}")
  return value


def _check_range(sample_rate: float, low_hz: float, high_hz: float | None) -> tuple[float, float]:
  """Validates the frequency range and returns (low_hz, high_hz) with None resolved to Nyquist."""
  if not sample_rate > 0:
    raise ConfigError(f"sample_rate must be > 0 Hz, got {sample_rate!r}")
  nyquist = sample_rate / 2.0
  high_hz = nyquist if high_hz is None else high_hz
  if not low_hz >= 0:
    raise ConfigError(f"low_hz must be >= 0 Hz, got {low_hz!r}")
  if not high_hz <= nyquist:
    raise ConfigError(f"high_hz must be <= Nyquist ({nyquist:g} Hz at sample_rate "
                      f"{sample_rate:g}), "
                      f"got {high_hz!r}")
  if not low_hz < high_hz:
    raise ConfigError(f"low_hz must be < high_hz, got low_hz={low_hz!r}, high_hz={high_hz!r}")
  return float(low_hz), float(high_hz)


def _check_scale(scale: str) -> str:
  if scale not in _WARPS:
    raise ConfigError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
  return scale


def band_edges(num_filters: int,
               sample_rate: float,
               scale: str = "linear",
               low_hz: float = 0.0,
               high_hz: float | None = None) -> np.ndarray:
  """The (low, high) edge in Hz of each of `num_filters` non-overlapping bands tiling
  [low_hz, high_hz].

  The edges are equally spaced on the axis of `scale` (paper Sec. 3 and 4.1):
    * `linear`: equal-width bands, the paper's bank (64 bands of 125 Hz over 0-8 kHz at 16 kHz; its
      code's bank of 118.75 Hz bands is `high_hz=0.95 * 8000`).
    * `mel`: equally spaced on the HTK mel scale 2595 * log10(1 + f / 700).
    * `speech`: linear, with SPEECH_DENSITY (3) times as many bands per Hz below SPEECH_KNEE_HZ (4
    kHz)
      as above: 3/4 of the bands lie below 4 kHz over 0-8 kHz.

  Args:
    num_filters: number of bands, >= 1.
    sample_rate: sampling rate in Hz.
    scale: one of `SCALES`.
    low_hz: lower edge of the lowest band, >= 0.
    high_hz: upper edge of the highest band, <= Nyquist; None means Nyquist.

  Returns:
    float64 array [num_filters, 2], ascending; band k is [edges[k, 0], edges[k, 1]] and
    edges[k, 1] == edges[k + 1, 0].

  Raises:
    ConfigError: on a bad argument.
  """
  num_filters = _positive_int(num_filters, "num_filters", 1)
  to_warped, from_warped = _WARPS[_check_scale(scale)]
  low_hz, high_hz = _check_range(sample_rate, low_hz, high_hz)
  warped = np.linspace(to_warped(np.float64(low_hz)), to_warped(np.float64(high_hz)),
                       num_filters + 1)
  edges = from_warped(warped)
  edges[0], edges[-1] = low_hz, high_hz  # Exact ends: the top edge may be Nyquist itself.
  return np.stack([edges[:-1], edges[1:]], axis=1)


def _design_band(kernel_size: int, low: float, high: float, sample_rate: float) -> np.ndarray:
  """One Hamming-windowed FIR passing [low, high] Hz, scaled like MATLAB fir1."""
  nyquist = sample_rate / 2.0
  if low <= 0.0 and high >= nyquist:
    # All-pass: a unit impulse at the tap that is the identity under 'SAME' padding.
    taps = np.zeros(kernel_size)
    taps[(kernel_size - 1) // 2] = 1.0
    return taps
  if low <= 0.0:
    return signal.firwin(kernel_size, high, window="hamming", fs=sample_rate)
  if high >= nyquist:
    # A symmetric even-length (type II) filter has a forced zero at Nyquist, so firwin cannot make
    # this
    # high-pass at even kernel sizes. Shifting the low-pass [0, nyquist - low] by fs/2 (multiplying
    # tap n
    # by (-1)^n) mirrors its response: |H(f)| = |H_lowpass(nyquist - f)|, unit gain at Nyquist. At
    # even
    # sizes the result is antisymmetric (type IV, free at Nyquist) with the same (K - 1) / 2 delay
    # as the
    # other filters; at odd sizes it equals firwin's high-pass up to sign.
    lowpass = signal.firwin(kernel_size, nyquist - low, window="hamming", fs=sample_rate)
    return lowpass * (-1.0)**np.arange(kernel_size)
  return signal.firwin(kernel_size, [low, high], pass_zero=False, window="hamming", fs=sample_rate)


def fir_filterbank(num_filters: int,
                   kernel_size: int,
                   sample_rate: float,
                   scale: str = "linear",
                   low_hz: float = 0.0,
                   high_hz: float | None = None) -> np.ndarray:
  """The FIR bank that initialises SimpleNet's convolution (paper Sec. 3, 4.1).

  Column k passes band k of `band_edges(num_filters, sample_rate, scale, low_hz, high_hz)`: a
  low-pass
  when the band starts at 0 Hz, a high-pass when it ends at Nyquist and a band-pass otherwise, each
  a
  Hamming-windowed FIR with fir1-style gain (see the module docstring).

  Args:
    num_filters: number of filters (bands), >= 1.
    kernel_size: taps per filter, >= 2.
    sample_rate: sampling rate in Hz.
    scale: band layout, one of `SCALES`.
    low_hz: lower edge of the lowest band.
    high_hz: upper edge of the highest band; None means Nyquist.

  Returns:
    float32 array [kernel_size, num_filters].

  Raises:
    ConfigError: on a bad argument.
  """
  kernel_size = _positive_int(kernel_size, "kernel_size", 2)
  edges = band_edges(num_filters, sample_rate, scale, low_hz, high_hz)
  columns = [_design_band(kernel_size, low, high, sample_rate) for low, high in edges]
  return np.stack(columns, axis=1).astype(np.float32)


def _kernel_dims(shape: Sequence[int]) -> tuple[int, int]:
  """(kernel_size, num_filters) of a 1-D conv kernel shape [K, F] or [K, 1, F]."""
  shape = tuple(shape)
  if len(shape) == 2 or (len(shape) == 3 and shape[1] == 1):
    return shape[0], shape[-1]
  raise ConfigError("kernel shape must be (kernel_size, num_filters) or "
                    "(kernel_size, 1, num_filters) "
                    f"for a single-channel 1-D conv, got {shape}")


def fir_init(scale: str = "linear",
             low_hz: float = 0.0,
             high_hz: float | None = None,
             sample_rate: float = 16000) -> Initializer:
  """A Flax kernel initialiser returning `fir_filterbank` (paper Sec. 3, 4.1).

  Args:
    scale: band layout, one of `SCALES`.
    low_hz: lower edge of the lowest band.
    high_hz: upper edge of the highest band; None means Nyquist.
    sample_rate: sampling rate in Hz.

  Returns:
    `init(key, shape, dtype=jnp.float32)` for shape [K, F] or [K, 1, F]; the key is unused (the bank
    is
    deterministic).

  Raises:
    ConfigError: on a bad argument (here for the range and scale, at init time for the shape).
  """
  band_edges(1, sample_rate, scale, low_hz, high_hz)  # Fail now rather than at model init.

  def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    del key
    kernel_size, num_filters = _kernel_dims(shape)
    bank = fir_filterbank(num_filters, kernel_size, sample_rate, scale, low_hz, high_hz)
    return jnp.asarray(bank.reshape(shape), dtype=dtype)

  return init


def sine_bank(num_filters: int,
              kernel_size: int,
              sample_rate: float = 16000,
              faithful_to_original: bool = False) -> np.ndarray:
  """The paper code's alternative bank: sinusoids of 150 Hz steps (`sineInit`).

  Filter k >= 1 is sin(2 pi 150 k t) / kernel_size over the kernel span, t in seconds centred on the
  kernel; filter 0 is a unit impulse (all-pass). Frequencies 150 k above Nyquist alias, as in the
  original.

  Args:
    num_filters: number of filters, >= 1.
    kernel_size: taps per filter, >= 1.
    sample_rate: sampling rate in Hz.
    faithful_to_original: False puts t on the sample grid, t = (n - (K - 1) / 2) / sample_rate, and
    the
      impulse at tap (K - 1) // 2 (the identity under 'SAME' padding). True copies the original
      code:
      t = linspace(-K / 2, K / 2, K) / sample_rate (a step of K / (K - 1) samples) and the impulse
      at
      tap 0 (a delay of (K - 1) // 2 samples under 'SAME' padding).

  Returns:
    float32 array [kernel_size, num_filters].
  """
  num_filters = _positive_int(num_filters, "num_filters", 1)
  kernel_size = _positive_int(kernel_size, "kernel_size", 1)
  if not sample_rate > 0:
    raise ConfigError(f"sample_rate must be > 0 Hz, got {sample_rate!r}")
  if faithful_to_original:
    t = np.linspace(-kernel_size / 2, kernel_size / 2, kernel_size) / sample_rate
    impulse_tap = 0
  else:
    t = (np.arange(kernel_size) - (kernel_size - 1) / 2) / sample_rate
    impulse_tap = (kernel_size - 1) // 2
  freqs = 150.0 * np.arange(num_filters)
  bank = np.sin(2 * np.pi * t[:, None] * freqs[None, :]) / kernel_size
  bank[:, 0] = 0.0
  bank[impulse_tap, 0] = 1.0
  return bank.astype(np.float32)


def sine_init(sample_rate: float = 16000, faithful_to_original: bool = False) -> Initializer:
  """A Flax kernel initialiser returning `sine_bank` (the paper code's `sineInit`).

  Args:
    sample_rate: sampling rate in Hz.
    faithful_to_original: see `sine_bank`.

  Returns:
    `init(key, shape, dtype=jnp.float32)` for shape [K, F] or [K, 1, F]; the key is unused.
  """
  if not sample_rate > 0:
    raise ConfigError(f"sample_rate must be > 0 Hz, got {sample_rate!r}")

  def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    del key
    kernel_size, num_filters = _kernel_dims(shape)
    bank = sine_bank(num_filters, kernel_size, sample_rate, faithful_to_original)
    return jnp.asarray(bank.reshape(shape), dtype=dtype)

  return init
