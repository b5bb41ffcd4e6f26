"""LEAF, a learnable audio front-end of Gabor filters, Gaussian pooling and PCEN (beyond the paper).

Zeghidour, Teboul, de Chaumont Quitry & Tagliasacchi 2021, "LEAF: A Learnable Frontend for Audio
Classification" (ICLR 2021, arXiv:2101.08596):

1. complex Gabor filters phi_n(t) = exp(i mu_n t) exp(-t^2 / (2 sigma_n^2)) / (sqrt(2 pi) sigma_n)
   with a learnable centre frequency mu_n (radians per sample) and width sigma_n (samples),
   initialised from a mel filter bank (its centres and full widths at half maximum), projected
   into mu in [0, pi], sigma in [4 sqrt(2 ln 2) / pi, K sqrt(2 ln 2) / pi] in the forward pass;
2. the squared modulus |x * phi_n|^2;
3. per-channel Gaussian low-pass pooling with a learnable width (relative to the pooling length,
   initialised to 0.4, kept in [2 / P, 0.5]), one output per stride;
4. PCEN compression (E / (floor + M)^alpha + delta)^(1 / root) - delta^(1 / root), M an
   exponential moving average of E over frames, with learnable per-channel alpha (0.96), delta
   (2), root (2; LEAF's r = 1 / root) and smoothing coefficient (0.04).

Differences from LEAF, all chosen to make it a drop-in SimpleNet front-end (same SimpleNet-CNN
head, same `[B, T // window, F]` output): the pooling stride is `window_ms` (40 ms; LEAF: 10 ms)
and the pooling length `pool_ms` keeps LEAF's length / stride ratio of 2.5 (100 ms; LEAF: 25 ms);
64 filters (LEAF: 40); the Gaussian pooling weights are normalised to sum 1 (a weighted mean of
|y|^2, comparable to SimpleNet's mean |y|; LEAF's are not normalised). The Gabor filters run over
the whole waveform, as in LEAF (SimpleNet's `padding="signal"`); LEAF's optional pre-emphasis is
not included.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wavejax import errors
from wavejax.models import filters
from wavejax.models.frontends import compress, window_samples

_SQRT_2LN2 = float(np.sqrt(2.0 * np.log(2.0)))
COMPRESSIONS = ("pcen", "log", "none")


def gabor_init_params(num_filters: int, kernel_size: int, sample_rate: int, scale: str,
                      low_hz: float, high_hz: float | None) -> tuple[np.ndarray, np.ndarray]:
  """(mu [F] radians/sample, sigma [F] samples) of Gabor filters matching triangular filters.

  The triangles of a `scale` filter bank (mel: the usual mel bank) have corners at the F + 2
  points of `filters.band_edges(F + 1, ...)`; filter n peaks at point n + 1 and has a full width
  at half maximum of (p[n + 2] - p[n]) / 2 Hz. A Gabor filter's frequency response is a Gaussian
  of standard deviation 1 / sigma around mu, so sigma = 2 sqrt(2 ln 2) / FWHM (rad/sample).
  Both are clipped into LEAF's constraint set.
  """
  points = filters.band_edges(num_filters + 1, sample_rate, scale, low_hz, high_hz)
  points = np.concatenate([points[:, 0], points[-1:, 1]])
  centre_hz = points[1:-1]
  fwhm_hz = (points[2:] - points[:-2]) / 2.0
  mu = 2 * np.pi * centre_hz / sample_rate
  sigma = 2 * _SQRT_2LN2 * sample_rate / (2 * np.pi * fwhm_hz)
  mu, sigma = constrain_gabor(mu, sigma, kernel_size, np)
  return mu.astype(np.float32), sigma.astype(np.float32)


def constrain_gabor(mu, sigma, kernel_size: int, xp=jnp):
  """LEAF's projection: mu in [0, pi], sigma in [4 sqrt(2 ln 2) / pi, K sqrt(2 ln 2) / pi]."""
  mu = xp.clip(mu, 0.0, np.pi)
  sigma = xp.clip(sigma, 4 * _SQRT_2LN2 / np.pi, kernel_size * _SQRT_2LN2 / np.pi)
  return mu, sigma


def gabor_kernel(mu: jax.Array, sigma: jax.Array, kernel_size: int) -> jax.Array:
  """Real and imaginary parts of the Gabor filters as `[K, 2F]` (first F real)."""
  t = jnp.arange(kernel_size, dtype=jnp.float32) - (kernel_size // 2)
  t = t[:, None]
  envelope = jnp.exp(-0.5 * (t / sigma)**2) / (jnp.sqrt(2 * jnp.pi) * sigma)
  return jnp.concatenate([envelope * jnp.cos(mu * t), envelope * jnp.sin(mu * t)], axis=1)


def gaussian_pool(energy: jax.Array, width: jax.Array, pool_size: int, stride: int,
                  num_frames: int) -> jax.Array:
  """Per-channel Gaussian-weighted mean of `[B, T, F]` around every frame centre: `[B, W, F]`.

  Frame w covers samples w * stride + stride // 2 - pool_size // 2 + j, j < P (zeros outside the
  signal), weighted by exp(-((j - (P - 1) / 2) / (width (P - 1) / 2))^2 / 2), normalised to sum 1.
  Computed as a sum over the ceil(P / stride) stride-long blocks a frame overlaps (elementwise
  products of reshaped views, cheap to differentiate), not as a strided depthwise convolution,
  whose gradients XLA:CPU computes densely (measured 100x slower).
  """
  width = jnp.clip(width, 2.0 / pool_size, 0.5)
  j = jnp.arange(pool_size, dtype=jnp.float32)[:, None] - (pool_size - 1) / 2.0
  weights = jnp.exp(-0.5 * (j / (width * (pool_size - 1) / 2.0))**2)
  weights = weights / jnp.sum(weights, axis=0, keepdims=True)  # [P, F]
  num_blocks = -(-pool_size // stride)
  weights = jnp.pad(weights, ((0, num_blocks * stride - pool_size), (0, 0)))
  weights = weights.reshape(num_blocks, stride, -1)
  start = stride // 2 - pool_size // 2  # first sample of frame 0
  length = (num_frames + num_blocks - 1) * stride
  padded = jnp.pad(energy, ((0, 0), (max(0, -start), max(0, length + start - energy.shape[1])),
                            (0, 0)))
  padded = padded[:, max(0, start):max(0, start) + length]
  blocks = padded.reshape(energy.shape[0], num_frames + num_blocks - 1, stride, -1)
  # An elementwise product and a sum, not an einsum: XLA:CPU lowers "bwsf,sf->bwf" to a batched
  # matmul with large transposes (measured 2.5x slower with its gradient).
  return sum((blocks[:, k:k + num_frames] * weights[k]).sum(axis=2) for k in range(num_blocks))


def moving_average(energy: jax.Array, coefficient: jax.Array) -> jax.Array:
  """M[t] = (1 - s) M[t - 1] + s E[t] over frames, M[0] = E[0], per channel: `[B, W, F]`."""
  def step(state, frame):
    state = (1.0 - coefficient) * state + coefficient * frame
    return state, state
  _, smoothed = lax.scan(step, energy[:, 0], energy.swapaxes(0, 1))
  return smoothed.swapaxes(0, 1)


class PCEN(nn.Module):
  """Per-channel energy normalisation (Wang et al. 2017) with LEAF's learnable parameters."""
  alpha: float = 0.96
  delta: float = 2.0
  root: float = 2.0
  smoothing: float = 0.04
  floor: float = 1e-12

  @nn.compact
  def __call__(self, energy: jax.Array) -> jax.Array:
    features = energy.shape[-1]
    def const(value):
      return lambda key, shape: jnp.full(shape, value, jnp.float32)
    alpha = jnp.minimum(self.param("alpha", const(self.alpha), (features,)), 1.0)
    delta = self.param("delta", const(self.delta), (features,))
    root = jnp.maximum(self.param("root", const(self.root), (features,)), 1.0)
    smoothing = jnp.clip(self.param("smoothing", const(self.smoothing), (features,)), 0.0, 1.0)
    smoothed = moving_average(energy, smoothing)
    gain = energy / (self.floor + smoothed)**alpha
    return (gain + delta)**(1.0 / root) - delta**(1.0 / root)


class LEAFFrontend(nn.Module, kw_only=True):
  """LEAF (Zeghidour et al. 2021): `[B, T]` -> `[B, windows, F]`.

  See the module docstring for the method and how it departs from LEAF.

  Attributes:
    num_filters: Gabor filters (LEAF: 40; here 64 as SimpleNet).
    kernel_size: taps per Gabor filter (LEAF: 401, 25 ms at 16 kHz).
    window_ms: pooling stride, one output frame per window (LEAF: 10 ms; here 40 ms as SimpleNet).
    pool_ms: Gaussian pooling length (LEAF: 25 ms = 2.5 strides; here 100 ms).
    sample_rate: input rate in Hz.
    fir_scale, fir_low_hz, fir_high_hz: the filter bank the Gabor filters start from (LEAF: mel,
      60-7800 Hz).
    pool_init: initial Gaussian pooling width, relative to half the pooling length (LEAF: 0.4).
    compression: "pcen" (LEAF), "log" (log(1e-6 + E)) or "none".

  Defaults: `wavejax.config.models.leaf_frontend_config`.
  """
  num_filters: int
  kernel_size: int
  window_ms: float
  pool_ms: float
  sample_rate: int
  fir_scale: str
  fir_low_hz: float
  fir_high_hz: float | None
  pool_init: float
  compression: str

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    if self.compression not in COMPRESSIONS:
      raise errors.ConfigError(f"config.model.frontend.compression={self.compression!r}: "
                               f"choose one of {', '.join(COMPRESSIONS)}")
    mu0, sigma0 = gabor_init_params(self.num_filters, self.kernel_size, self.sample_rate,
                                    self.fir_scale, self.fir_low_hz, self.fir_high_hz)
    mu = self.param("centre", lambda key, shape: jnp.asarray(mu0), (self.num_filters,))
    sigma = self.param("width", lambda key, shape: jnp.asarray(sigma0), (self.num_filters,))
    width = self.param("pool_width", nn.initializers.constant(self.pool_init),
                       (self.num_filters,))
    energy = self.gabor_energy(waveforms, *constrain_gabor(mu, sigma, self.kernel_size))
    stride = window_samples(self.window_ms, self.sample_rate)
    pool_size = max(1, window_samples(self.pool_ms, self.sample_rate))
    pooled = gaussian_pool(energy, width, pool_size, stride, energy.shape[1] // stride)
    if self.compression == "pcen":
      return PCEN()(pooled)
    return compress(pooled, self.compression)

  def gabor_energy(self, waveforms: jax.Array, mu: jax.Array, sigma: jax.Array) -> jax.Array:
    """|waveform * Gabor filter|^2 at every sample of the whole windows: `[B, W * window, F]`."""
    stride = window_samples(self.window_ms, self.sample_rate)
    num_frames = waveforms.shape[1] // stride
    if num_frames == 0:
      raise errors.ConfigError(
          f"clip of {waveforms.shape[1]} samples is shorter than one window of {stride}; "
          "raise config.data.clip_seconds or lower config.model.frontend.window_ms")
    kernel = gabor_kernel(mu, sigma, self.kernel_size)[:, None]
    y = lax.conv_general_dilated(
        waveforms[:, :num_frames * stride, None], kernel, window_strides=(1,), padding="SAME",
        dimension_numbers=("NWC", "WIO", "NWC"))
    real, imag = jnp.split(y, 2, axis=-1)
    return real**2 + imag**2
