"""The reference formulation: one `lax.conv_general_dilated` per window, plain autodiff."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from wavejax.models.windowed.common import compute_dtype, pool


def conv_energy(frames, kernel, bias, activation, precision=None):
  """VALID correlation of every frame with every kernel, then mean |act(y + bias)|: `[N, F]`."""
  dtype = compute_dtype(frames, kernel)
  y = lax.conv_general_dilated(
      frames.astype(dtype)[:, None, :], kernel.astype(dtype).T[:, None, :],
      window_strides=(1,), padding="VALID", dimension_numbers=("NCH", "OIH", "NCH"),
      precision=precision, preferred_element_type=jnp.float32)
  y = y + bias.astype(jnp.float32)[None, :, None]
  return jnp.mean(pool(y, activation), axis=-1)
