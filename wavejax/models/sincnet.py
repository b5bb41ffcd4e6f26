"""SincNet's parametric band-pass filters as a SimpleNet-style front-end (beyond the paper).

Ravanelli & Bengio 2018, "Speaker Recognition from Raw Waveform with SincNet" (SLT 2018,
arXiv:1808.00158): the first convolution's kernels are not free taps but band-pass filters
g[n] = 2 f2 sinc(2 pi f2 n) - 2 f1 sinc(2 pi f1 n) with a learnable low cut-off f1 and band width
f2 - f1 per filter, mel-initialised, times a Hamming window: 2 parameters per filter instead of K.

Where SincNet pools (max-pooling over time, then more convolutions), this front-end does what
SimpleNet does (Sec. 3): every 40 ms window is filtered on its own and pooled once as mean |y|,
through the same fast op (`windowed.filter_energy`). The `sincnet` model then puts the
SimpleNet-CNN head on top, so it differs from SimpleNet-CNN only in how the filters are
parameterised, which is the comparison this library is for.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wavejax import errors
from wavejax.models import filters
from wavejax.models.frontends import compress, window_samples, windowed_energy


def sinc_bank(low: jax.Array, high: jax.Array, kernel_size: int) -> jax.Array:
  """Hamming-windowed ideal band-passes `[K, F]` for cut-offs in cycles per sample.

  h[n] = (sin(2 pi f2 n) - sin(2 pi f1 n)) / (pi n), h[0] = 2 (f2 - f1), over n centred on the
  kernel: unit gain in the pass band, like `filters.fir_filterbank` (SincNet's code scales the
  centre tap to 1 instead).
  """
  n = jnp.arange(kernel_size, dtype=jnp.float32) - (kernel_size - 1) / 2.0
  centre = n == 0
  safe_n = jnp.where(centre, 1.0, n)[:, None]
  band = (jnp.sin(2 * jnp.pi * high * safe_n) - jnp.sin(2 * jnp.pi * low * safe_n)) / (
      jnp.pi * safe_n)
  band = jnp.where(centre[:, None], 2.0 * (high - low)[None, :], band)
  window = jnp.asarray(np.hamming(kernel_size), jnp.float32)[:, None]
  return band * window


class SincNetFrontend(nn.Module, kw_only=True):
  """Learnable sinc band-pass filters per window + mean-|y| pooling: `[B, T]` -> `[B, W, F]`.

  Parameters (in cycles per sample, i.e. Hz / sample_rate, as SincNet's first code, so that Adam's
  step size moves a cut-off by a few Hz): `low` and `band`, `[F]`. As in SincNet's code the
  filter passes [f1, f2] with f1 = min_low_hz + |low| and f2 = f1 + min_band_hz + |band| (capped
  at Nyquist), initialised from the bands of `filters.band_edges(F, rate, fir_scale, fir_low_hz,
  fir_high_hz)` (`low` = lower edge, `band` = width): the initial bands are those bands shifted up
  by min_low_hz and widened by min_band_hz. SincNet's defaults: mel scale from 30 Hz to
  Nyquist - min_low_hz - min_band_hz, 251 taps, minima 50 Hz.

  Attributes:
    num_filters, kernel_size, window_ms, sample_rate: as `SimpleNetFrontend`.
    fir_scale, fir_low_hz, fir_high_hz: the initial band layout (fir_high_hz None: the top band
      ends at Nyquist once min_low_hz and min_band_hz are added).
    min_low_hz, min_band_hz: lower bounds of f1 and of f2 - f1.
    activation, padding, compression, method, dtype, precision: as `SimpleNetFrontend`.

  Defaults: `wavejax.config.models.sincnet_frontend_config`.
  """
  num_filters: int
  kernel_size: int
  window_ms: float
  sample_rate: int
  fir_scale: str
  fir_low_hz: float
  fir_high_hz: float | None
  min_low_hz: float
  min_band_hz: float
  activation: str
  padding: str
  compression: str
  method: str
  dtype: Any = jnp.float32  # of the convolution's products (`frontends.windowed_energy`)
  precision: str | None = None

  def initial_edges(self) -> np.ndarray:
    """The `[F, 2]` band edges in Hz that `low` and `band` start from."""
    nyquist = self.sample_rate / 2.0
    high_hz = self.fir_high_hz
    if high_hz is None:
      high_hz = nyquist - self.min_low_hz - self.min_band_hz
    if high_hz <= self.fir_low_hz:
      raise errors.ConfigError(
          f"config.model.frontend: the SincNet bands need fir_low_hz < fir_high_hz, got "
          f"{self.fir_low_hz} and {high_hz} (min_low_hz + min_band_hz leave no room below "
          "Nyquist?)")
    return filters.band_edges(self.num_filters, self.sample_rate, self.fir_scale,
                              self.fir_low_hz, high_hz)

  def cutoffs(self, low: jax.Array, band: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f1, f2) in cycles per sample from the parameters."""
    f1 = self.min_low_hz / self.sample_rate + jnp.abs(low)
    f2 = jnp.minimum(f1 + self.min_band_hz / self.sample_rate + jnp.abs(band), 0.5)
    return f1, f2

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    edges = self.initial_edges() / self.sample_rate
    low = self.param("low", lambda key, shape: jnp.asarray(edges[:, 0], jnp.float32),
                     (self.num_filters,))
    band = self.param("band", lambda key, shape: jnp.asarray(edges[:, 1] - edges[:, 0],
                                                             jnp.float32),
                      (self.num_filters,))
    kernel = sinc_bank(*self.cutoffs(low, band), self.kernel_size)
    bias = jnp.zeros((self.num_filters,), kernel.dtype)
    energy = windowed_energy(
        waveforms, kernel, bias, window=window_samples(self.window_ms, self.sample_rate),
        padding=self.padding, activation=self.activation, method=self.method, dtype=self.dtype,
        precision=self.precision)
    return compress(energy, self.compression)
