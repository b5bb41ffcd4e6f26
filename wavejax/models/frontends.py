"""Waveform front-ends: `[batch, samples]` -> `[batch, windows, features]`.

`SimpleNetFrontend` is the paper's whole front-end (Sec. 3, Fig. 5): the waveform is sliced into
40 ms windows (Sec. 2.2.1), each window is filtered by ONE convolution layer of 64 FIR kernels of 256
taps initialised as non-overlapping band-pass filters, and the output is pooled once, as the mean of
its absolute value over the window (an estimate of each band's energy), giving a "learned
spectrogram" of 150 windows x 64 filters for 6 s at 16 kHz. Pooling only after the single
convolution avoids the aliasing that pooling between convolutions causes (Sec. 2.2.3).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from wavejax import errors, filters
from wavejax.models import windowed_conv


def window_frames(waveforms: jax.Array, window: int, kernel_size: int, padding: str) -> jax.Array:
  """Cuts `[B, T]` into `[B, T // window, window + kernel_size - 1]` frames for a VALID filter.

  padding="window": every window is zero-padded on its own ('same' padding per window, as the
  paper's code convolves each window independently); padding="signal": frames carry the true
  neighbouring samples, so the result equals filtering the whole signal and then pooling.
  """
  batch, samples = waveforms.shape
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


class SimpleNetFrontend(nn.Module):
  """One windowed convolution + mean-|x| pooling (Sec. 3): `[B, T]` -> `[B, T // window, F]`.

  Attributes:
    num_filters: number of FIR kernels (paper: 64).
    kernel_size: taps per kernel (paper: 256, quoted as a 31.25 Hz resolution at 16 kHz).
    window_ms: window length (paper: 40 ms -> 640 samples at 16 kHz).
    sample_rate: input rate in Hz.
    kernel_init, fir_scale, fir_low_hz, fir_high_hz: kernel initialiser (see `kernel_initializer`).
    activation: "none" (paper text: the pooled value is the band energy) or "relu" (paper code).
    padding: "window" or "signal" (see `window_frames`).
    trainable: False freezes the kernels (SpecNet: a fixed FIR spectrogram, Sec. 4.1).
    compression: "none" (paper) or "log" (log(1e-6 + energy), a spectrogram-style option).
    method: implementation of the windowed filter (see `windowed_conv.filter_energy`).
  """
  num_filters: int = 64
  kernel_size: int = 256
  window_ms: float = 40.0
  sample_rate: int = 16000
  kernel_init: str = "fir"
  fir_scale: str = "linear"
  fir_low_hz: float = 0.0
  fir_high_hz: float | None = None
  activation: str = "none"
  padding: str = "window"
  trainable: bool = True
  compression: str = "none"
  method: str = "auto"

  @property
  def window(self) -> int:
    return int(round(self.sample_rate * self.window_ms / 1000.0))

  @nn.compact
  def __call__(self, waveforms: jax.Array) -> jax.Array:
    kernel = self.param(
        "kernel",
        kernel_initializer(self.kernel_init, self.fir_scale, self.fir_low_hz, self.fir_high_hz,
                           self.sample_rate),
        (self.kernel_size, self.num_filters))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.num_filters,))
    if not self.trainable:
      kernel, bias = jax.lax.stop_gradient(kernel), jax.lax.stop_gradient(bias)
    frames = window_frames(waveforms, self.window, self.kernel_size, self.padding)
    batch, num_windows, frame_length = frames.shape
    energy = windowed_conv.filter_energy(
        frames.reshape(batch * num_windows, frame_length), kernel, bias,
        activation=self.activation, method=self.method)
    energy = energy.reshape(batch, num_windows, self.num_filters)
    return compress(energy, self.compression)


def compress(energy: jax.Array, compression: str) -> jax.Array:
  if compression == "none":
    return energy
  if compression == "log":
    return jnp.log(energy + 1e-6)
  raise errors.ConfigError(
      f"config.model.frontend.compression={compression!r}: choose 'none' or 'log'")
