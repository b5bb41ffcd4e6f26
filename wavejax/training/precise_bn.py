"""Precise batch norm (Wu & Johnson 2021): batch norm statistics re-estimated on the current
weights before evaluation, instead of the running averages of training."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wavejax.models import layers
from wavejax.training.steps import TrainState


def batch_moments(state: TrainState, waveforms: jax.Array) -> Any:
  """Every batch norm's mean and variance over `waveforms` in training mode (the current weights).

  Computed from one update of zeroed running statistics: new = (1 - momentum) * batch statistic.
  """
  zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
  dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 2**31 - 1)
  _, updates = state.apply_fn({"params": state.params, "batch_stats": zeros}, waveforms,
                              train=True, rngs={"dropout": dropout_key}, mutable=["batch_stats"])
  return jax.tree.map(lambda v: v / (1.0 - layers.BATCH_NORM_MOMENTUM), updates["batch_stats"])


def population_statistics(per_batch: list) -> Any:
  """Pools equal-sized batches' `{"mean", "var"}` into the statistics of their union: mean of
  means, and mean of (var + mean^2) minus mean^2."""
  stacked = jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *per_batch)

  def pool(node):
    if set(node) == {"mean", "var"}:
      mean = node["mean"].mean(axis=0)
      second = (node["var"] + node["mean"]**2).mean(axis=0)
      return {"mean": mean, "var": np.maximum(second - mean**2, 0.0)}
    return {name: pool(child) for name, child in node.items()}

  return pool(stacked)
