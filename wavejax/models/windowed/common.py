"""What every formulation of the windowed filter energy shares: product dtype, pooling, matmul."""

from __future__ import annotations

import jax
import jax.numpy as jnp

ACTIVATIONS = ("none", "relu")


def compute_dtype(frames, kernel):
  """bfloat16 products when frames and kernel are both bfloat16, else float32."""
  if frames.dtype == jnp.bfloat16 and kernel.dtype == jnp.bfloat16:
    return jnp.bfloat16
  return jnp.float32


def pool(y, activation):
  """|act(y)|, elementwise; `jax.nn.relu` (derivative 0 at 0) or `jnp.abs` (+1 at 0)."""
  return jax.nn.relu(y) if activation == "relu" else jnp.abs(y)


def matmul(a, b, precision=None):
  return jnp.matmul(a, b, precision=precision, preferred_element_type=jnp.float32)
