"""Waveform front-ends: `[batch, samples]` -> `[batch, windows, features]`.

`SimpleNetFrontend` is the paper's whole front-end (Sec. 3, Fig. 5): the waveform is sliced into
40 ms windows (Sec. 2.2.1), each window is filtered by ONE convolution layer of 64 FIR kernels of
256
taps initialised as non-overlapping band-pass filters, and the output is pooled once, as the mean of
its absolute value over the window (an estimate of each band's energy), giving a "learned
spectrogram" of 150 windows x 64 filters for 6 s at 16 kHz. Pooling only after the single
convolution avoids the aliasing that pooling between convolutions causes (Sec. 2.2.3).

The baselines' front-ends (Sec. 2.2, Fig. 5) stack convolutions and poolings instead:
`WaveRNNFrontend` (8 x conv + max-pool per 40 ms window, the paper's WaveRNN),
`TrigeorgisFrontend` (Trigeorgis et al. 2016's two convolutions per window) and
`SoundNetFrontend` (SoundNet-8 over the whole waveform, no windowing). The learnable filter banks
beyond the paper are in `sincnet.py` and `leaf.py`.

Every front-end is called as `frontend(waveforms, train=bool)`; `train` switches batch statistics
where a front-end has batch normalisation and is ignored otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from wavejax import errors
from wavejax.models import filters, windowed
from wavejax.models.layers import Affine, conv_general_dilated, max_pool, normalize


def window_frames(waveforms: jax.Array, window: int, kernel_size: int, padding: str) -> jax.Array:
  """Cuts `[B, T]` into `[B, T // window, window + kernel_size - 1]` frames for a VALID filter.

  padding="window": every window is zero-padded on its own ('same' padding per window, as the
  paper's code convolves each window independently); padding="signal": frames carry the true
  neighbouring samples, so the result equals filtering the whole signal and then pooling.
  """
  batch, samples = waveforms.shape
  if window < 1:
    raise errors.ConfigError(
        f"config.model.frontend.window_ms gives windows of {window} samples; set it to at least "
        "one sample's duration (the paper: 40 ms)")
  if padding == "window" and kernel_size > window:
    _warn_kernel_longer_than_window(kernel_size, window)
  num_windows = samples // window
  if num_windows == 0:
    raise errors.ConfigError(
        f"clip of {samples} samples is shorter than one window of {window}; "
        "raise config.data.clip_seconds or lower config.model.frontend.window_ms")
  before = (kernel_size - 1) // 2
  after = kernel_size - 1 - before
  waveforms = waveforms[:, :num_windows * window]
  if padding == "window":
    windows = waveforms.reshape(batch, num_windows, window)
    return jnp.pad(windows, ((0, 0), (0, 0), (before, after)))
  if padding == "signal":
    padded = jnp.pad(waveforms, ((0, 0), (before, after)))
    starts = jnp.arange(num_windows)[:, None] * window
    return padded[:, starts + jnp.arange(window + kernel_size - 1)[None, :]]
  raise errors.ConfigError(
      f"config.model.frontend.padding={padding!r}: choose 'window' or 'signal'")


_WARNED_KERNELS: set[tuple[int, int]] = set()


def _warn_kernel_longer_than_window(kernel_size: int, window: int) -> None:
  """Once per (kernel, window): legal, but each output then mostly sees the zero padding."""
  if (kernel_size, window) in _WARNED_KERNELS:
    return
  _WARNED_KERNELS.add((kernel_size, window))
  logging.warning(
      "config.model.frontend.kernel_size=%d is longer than the window of %d samples "
      "(config.model.frontend.window_ms) with padding='window': every window is padded with "
      "zeros on its own, so the kernel mostly sees the padding; use padding='signal', a shorter "
      "kernel or a longer window", kernel_size, window)


def split_windows(waveforms: jax.Array, window: int) -> jax.Array:
  """`[B, T]` -> `[B, T // window, window]` (Sec. 2.2.1), dropping a tail shorter than a window."""
  return window_frames(waveforms, window, 1, "window")


def window_samples(window_ms: float, sample_rate: int) -> int:
  return int(round(sample_rate * window_ms / 1000.0))


def kernel_initializer(init: str, scale: str, low_hz: float, high_hz, sample_rate: int):
  """The front-end kernel initialiser named by config.model.frontend.init (Sec. 3)."""
  if init == "fir":
    return filters.fir_init(scale=scale, low_hz=low_hz, high_hz=high_hz, sample_rate=sample_rate)
  if init == "sine":
    return filters.sine_init(sample_rate=sample_rate)
  if init == "glorot":
    return nn.initializers.glorot_uniform()
  raise errors.ConfigError(
      f"config.model.frontend.init={init!r}: choose 'fir', 'sine' or 'glorot'")


def windowed_energy(waveforms: jax.Array, kernel: jax.Array, bias: jax.Array, *, window: int,
                    padding: str, activation: str, method: str,
                    dtype: Any = jnp.float32, precision: str | None = None) -> jax.Array:
  """Filters every window of `[B, T]` with `kernel` `[K, F]` and pools mean |y|: `[B, W, F]`.

  `dtype` is the dtype of the products (bfloat16: mixed precision); the sums and the float32
  result are always accumulated in float32 (`windowed.filter_energy`). `precision`: of the
  float32 products (`config.model.matmul_precision`).
  """
  waveforms, kernel, bias = (x.astype(dtype) for x in (waveforms, kernel, bias))
  frames = window_frames(waveforms, window, kernel.shape[0], padding)
  batch, num_windows, frame_length = frames.shape
  energy = windowed.filter_energy(
      frames.reshape(batch * num_windows, frame_length), kernel, bias,
      activation=activation, method=method, precision=precision)
  return energy.reshape(batch, num_windows, kernel.shape[1])


def input_affine(waveforms: jax.Array, input_norm: str) -> jax.Array:
  """The paper code's BN layer on the raw waveform (inference mode: one learnable scale, offset)."""
  if input_norm == "none":
    return waveforms
  if input_norm == "affine":
    return Affine(name="input_affine")(waveforms[..., None])[..., 0]
  raise errors.ConfigError(
      f"config.model.frontend.input_norm={input_norm!r}: choose 'none' or 'affine'")


class FirstLayerInit(nn.Module, kw_only=True):
  """The fields of a front-end whose first convolution is single-channel and FIR-like, and its
  initialiser (`kernel_initializer`): SimpleNet's bank, the first layer of the stacks.

  Attributes:
    sample_rate: input rate in Hz.
    kernel_init, fir_scale, fir_low_hz, fir_high_hz: `config.model.frontend.init`, ... (a Flax
      module cannot have a field named `init`).
  """
  sample_rate: int
  kernel_init: str
  fir_scale: str
  fir_low_hz: float
  fir_high_hz: float | None

  def first_kernel_init(self):
    return kernel_initializer(self.kernel_init, self.fir_scale, self.fir_low_hz,
                              self.fir_high_hz, self.sample_rate)


class SimpleNetFrontend(FirstLayerInit, kw_only=True):
  """One windowed convolution + mean-|x| pooling (Sec. 3): `[B, T]` -> `[B, T // window, F]`.

  Attributes:
    num_filters: number of FIR kernels (paper: 64).
    kernel_size: taps per kernel (paper: 256, quoted as a 31.25 Hz resolution at 16 kHz).
    window_ms: window length (paper: 40 ms -> 640 samples at 16 kHz).
    sample_rate, kernel_init, fir_scale, fir_low_hz, fir_high_hz: see `FirstLayerInit`.
    activation: "none" (paper text: the pooled value is the band energy) or "relu" (paper code).
    padding: "window" or "signal" (see `window_frames`).
    trainable: False freezes the kernels (SpecNet: a fixed FIR spectrogram, Sec. 4.1).
    compression: "none" (paper) or "log" (log(1e-6 + energy), a spectrogram-style option).
    method: implementation of the windowed filter (see `windowed.filter_energy`).
    input_norm: "none" (paper text) or "affine": the paper code's batch normalisation of the
      waveform before the convolution, which in inference mode is one learnable scale and offset.
    dtype: dtype of the convolution's products (parameters stay float32; see `windowed_energy`).
    precision: of its float32 products (`config.model.matmul_precision`).

  Defaults: `wavejax.config.models.simplenet_frontend_config`.
  """
  num_filters: int
  kernel_size: int
  window_ms: float
  activation: str
  padding: str
  trainable: bool
  compression: str
  method: str
  input_norm: str
  dtype: Any = jnp.float32
  precision: str | None = None

  @property
  def window(self) -> int:
    return window_samples(self.window_ms, self.sample_rate)

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # no batch statistics
    kernel = self.param("kernel", self.first_kernel_init(), (self.kernel_size, self.num_filters))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.num_filters,))
    if not self.trainable:
      kernel, bias = jax.lax.stop_gradient(kernel), jax.lax.stop_gradient(bias)
    energy = windowed_energy(
        input_affine(waveforms, self.input_norm), kernel, bias, window=self.window,
        padding=self.padding, activation=self.activation, method=self.method, dtype=self.dtype,
        precision=self.precision)
    return compress(energy, self.compression)


def compress(energy: jax.Array, compression: str) -> jax.Array:
  if compression == "none":
    return energy
  if compression == "log":
    return jnp.log(energy + 1e-6)
  raise errors.ConfigError(
      f"config.model.frontend.compression={compression!r}: choose 'none' or 'log'")


def _check_pooled_length(length: int, pool: int, num_layers: int) -> None:
  """Raises a ConfigError when `num_layers` VALID poolings by `pool` empty a window."""
  if length // pool**num_layers < 1:
    raise errors.ConfigError(
        f"a window of {length} samples is too short for {num_layers} max-poolings by {pool} "
        f"(needs {pool**num_layers}); raise config.model.frontend.window_ms or lower "
        "config.model.frontend.num_layers")


class _PerWindowStack(FirstLayerInit, kw_only=True):
  """What WaveRNN-style front-ends share: every window of `window_ms` goes through the stack on
  its own, as a batch of `[windows, samples, 1]`; the first convolution takes the configured
  initialiser (`first_kernel_init`), the deeper ones Glorot."""
  window_ms: float
  dtype: Any = jnp.float32  # of the convolutions' products; parameters stay float32

  def windows_as_batch(self, waveforms: jax.Array) -> tuple[jax.Array, int, int]:
    """`[B, T]` -> (`[B * windows, window, 1]`, B, windows)."""
    windows = split_windows(waveforms, window_samples(self.window_ms, self.sample_rate))
    batch, num_windows, length = windows.shape
    return windows.reshape(batch * num_windows, length, 1), batch, num_windows

  def conv(self, features: int, kernel_size: int, layer: int) -> nn.Conv:
    init = self.first_kernel_init() if layer == 0 else nn.initializers.glorot_uniform()
    return nn.Conv(features, (kernel_size,), padding="SAME", kernel_init=init, dtype=self.dtype,
                   conv_general_dilated=conv_general_dilated)


class WaveRNNFrontend(_PerWindowStack, kw_only=True):
  """The paper's WaveRNN front-end (Sec. 2.2, 4.1): `[B, T]` -> `[B, windows, D]`.

  Each 40 ms window is processed on its own ('same' padding inside the window) by `num_layers`
  blocks of [1-D convolution (32 filters of 40 taps, Xavier/Glorot-uniform initialised, ReLU) ->
  max-pooling by 2], the paper's "16-layer front-end" (8 convolutions, 8 poolings), as in its
  code's `waveCNN.py` (docs/reference.md#which-wavernn). The pooled output of every window is
  flattened to one feature vector: 640 samples -> 2 steps x 32 filters = 64 features per window at
  16 kHz.

  `kernel_init` etc. set the first (single-channel, FIR-like) convolution's initialiser (see
  `FirstLayerInit`); the deeper ones are always Glorot, as in the paper. Defaults:
  `wavejax.config.models.wavernn_frontend_config`.
  """
  num_layers: int
  features: int
  kernel_size: int
  pool: int

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    x, batch, num_windows = self.windows_as_batch(waveforms)
    _check_pooled_length(x.shape[1], self.pool, self.num_layers)
    for layer in range(self.num_layers):
      x = nn.relu(self.conv(self.features, self.kernel_size, layer)(x))
      x = max_pool(x, (self.pool,), padding="VALID")
    return x.reshape(batch, num_windows, -1)


class TrigeorgisFrontend(_PerWindowStack, kw_only=True):
  """Trigeorgis et al. 2016 ("Adieu features?", ICASSP) per window: `[B, T]` -> `[B, windows, D]`.

  Per 40 ms window ('same' padding inside the window): conv (40 filters of 20 taps, ReLU) ->
  max-pool by 2 in time -> conv (40 filters of 40 taps, ReLU) -> max-pool ACROSS channels by 10
  (40 -> 4 channels), as end2you's `emo16.py` (docs/reference.md#which-wavernn); flattened per
  window: 640 samples -> 320 steps x 4 = 1280 features at 16 kHz. Glorot-initialised like the
  paper's WaveRNN (Sec. 4.1); `kernel_init` etc. set the first convolution's initialiser. Defaults:
  `wavejax.config.models.trigeorgis_frontend_config`.
  """
  features: int
  kernel_sizes: Sequence[int]
  pool: int
  channel_pool: int

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    if len(self.kernel_sizes) != 2 or self.features % self.channel_pool:
      raise errors.ConfigError(
          "config.model.frontend: the Trigeorgis front-end needs two kernel_sizes and features "
          f"divisible by channel_pool; got {tuple(self.kernel_sizes)}, {self.features}, "
          f"{self.channel_pool}")
    x, batch, num_windows = self.windows_as_batch(waveforms)
    _check_pooled_length(x.shape[1], self.pool, 1)
    x = nn.relu(self.conv(self.features, self.kernel_sizes[0], 0)(x))
    x = max_pool(x, (self.pool,), padding="VALID")
    x = nn.relu(self.conv(self.features, self.kernel_sizes[1], 1)(x))
    steps = x.shape[1]
    x = x.reshape(batch * num_windows, steps, self.features // self.channel_pool,
                  self.channel_pool).max(axis=-1)
    return x.reshape(batch, num_windows, -1)


class SoundNetFrontend(FirstLayerInit, kw_only=True):
  """SoundNet-8's convolutions (Aytar et al. 2016; paper Sec. 2.2, 4.1), trained from scratch.

  The WHOLE waveform, no windowing: 8 x [1-D conv (stride 2) -> normalisation -> ReLU], with
  max-pooling by 8 after the first two blocks and by 4 after the fifth (the paper's code,
  `soundNet.py`: conv(16, 64) -> pool 8 -> conv(32, 32) -> pool 8 -> conv(64, 16) -> conv(128, 8)
  -> conv(256, 4) -> pool 4 -> conv(512, 4) -> conv(1024, 4) -> conv(1401, 8)), Xavier/Glorot
  initialised. Output `[B, steps, 1401]`: 2 steps for 6 s at 16 kHz.

  Every convolution and pooling uses 'same' padding (output length ceil(n / stride)), so no
  dimension reaches zero however short the clip: any length >= 1 sample gives >= 1 step. The
  number of steps, and so the size of the dense layer that follows, depends on the clip length.

  `norm="batch"` (default; the paper's "batch normalization is used between layers", Sec. 3) has
  no convolution bias (the normalisation's offset replaces it); "affine" or "none" keep the bias.
  `kernel_init` etc. set the first (single-channel, FIR-like) convolution's initialiser.
  Defaults: `wavejax.config.models.soundnet_frontend_config`.
  """
  features: Sequence[int]
  kernel_sizes: Sequence[int]
  strides: Sequence[int]
  pools: Sequence[int]
  norm: str
  dtype: Any = jnp.float32  # of the convolutions' products; parameters stay float32

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    layers = (self.features, self.kernel_sizes, self.strides, self.pools)
    if len(set(map(len, layers))) != 1:
      raise errors.ConfigError(
          "config.model.frontend: features, kernel_sizes, strides and pools must have one entry "
          f"per layer; got lengths {[len(x) for x in layers]}")
    first_init = self.first_kernel_init()
    x = waveforms[..., None]
    for layer, (features, kernel, stride, pool) in enumerate(zip(*layers)):
      init = first_init if layer == 0 else nn.initializers.glorot_uniform()
      x = nn.Conv(features, (kernel,), strides=(stride,), padding="SAME",
                  use_bias=self.norm != "batch", kernel_init=init, dtype=self.dtype,
                  conv_general_dilated=conv_general_dilated)(x)
      x = nn.relu(normalize(x, self.norm, train, field="config.model.frontend.norm"))
      if pool > 1:
        x = max_pool(x, (pool,), padding="SAME")
    return x
