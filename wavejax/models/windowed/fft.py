"""Correlation by FFT per window: O(n log n) in the window instead of O(L K)."""

from __future__ import annotations

import jax.numpy as jnp

from wavejax.models.windowed.common import pool


def fft_energy(frames, kernel, bias, activation):
  """Per frame, rfft(frame) * conj(rfft(kernel)) over n >= L + K - 1 points (a power of two),
  inverse FFT, first L outputs. Always float32 (XLA's FFTs take no bfloat16); plain autodiff."""
  taps = kernel.shape[0]
  frame_len = frames.shape[1]
  length = frame_len - taps + 1
  n = 1 << (frame_len - 1).bit_length()
  spectrum = jnp.fft.rfft(frames.astype(jnp.float32), n=n)[:, :, None]
  kernel_spectrum = jnp.conj(jnp.fft.rfft(kernel.astype(jnp.float32), n=n, axis=0))[None]
  # Circular correlation: output t = sum_k frame[t + k] kernel[k] for t < L needs no wrap-around
  # because n >= L + K - 1.
  y = jnp.fft.irfft(spectrum * kernel_spectrum, n=n, axis=1)[:, :length]
  y = y + bias.astype(jnp.float32)[None, None, :]
  return jnp.mean(pool(y, activation), axis=1)
