"""The mean change rate of a layer's weights (paper Sec. 3, Fig. 4), for any model.

Fig. 4 compares "the mean change rate of the convolutional filters (i.e., weights)" of SoundNet
and SimpleNet during training, "defined as the mean absolute value of the change rate of the value
of each weight compared to the last iteration, which is defined as (value_i - value_{i-1}) /
value_{i-1}": mean |(w_i - w_{i-1}) / w_{i-1}| over a layer's weights. A layer whose rate stays
near 0 is not being trained effectively.

`ChangeRateTracker.update(epoch, params)` computes it per layer between consecutive calls; the
trainer calls it once before the first epoch (the baseline) and after every epoch. Weights that
were exactly 0 (|w| <= `min_abs`) have no change rate and are left out of the mean; the relative
norm change ||w_i - w_{i-1}|| / ||w_{i-1}|| is recorded beside the paper's number, since a few
weights near 0 can dominate the mean of ratios.

Per filter. The tracker also records, for every kernel, the relative norm change of each output
filter, ||dw_f|| / ||w_f|| over all axes but the last (the filter axis of both kernel layouts:
SimpleNet's front-end `[taps, filters]` and a convolution's `[taps, in, out]`); `mean_per_filter`
averages it over epochs, so a claim about filters can have an interval over filters.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import traverse_util


def layer_weights(params, leaf_names=("kernel",)) -> dict[str, np.ndarray]:
  """`{"frontend/Conv_0": kernel, ...}`: every parameter named in `leaf_names`, by module path,
  as float32 numpy copies."""
  flat = traverse_util.flatten_dict(jax.device_get(params))
  return {"/".join(map(str, path[:-1])) or path[-1]: np.array(value, np.float32)
          for path, value in flat.items() if path[-1] in leaf_names}


def change_rate(previous: np.ndarray, current: np.ndarray, min_abs: float = 1e-12) -> float:
  """The paper's mean |(w_i - w_{i-1}) / w_{i-1}| over weights with |w_{i-1}| > `min_abs`."""
  previous = np.asarray(previous, np.float64)
  current = np.asarray(current, np.float64)
  valid = np.abs(previous) > min_abs
  if not valid.any():
    return 0.0
  return float(np.mean(np.abs((current[valid] - previous[valid]) / previous[valid])))


def relative_norm_change(previous: np.ndarray, current: np.ndarray) -> float:
  """||w_i - w_{i-1}|| / ||w_{i-1}||."""
  previous = np.asarray(previous, np.float64)
  norm = np.linalg.norm(previous)
  return float(np.linalg.norm(np.asarray(current, np.float64) - previous) / norm) if norm else 0.0


def relative_norm_change_per_filter(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
  """`[F]`: ||w_i[..., f] - w_{i-1}[..., f]|| / ||w_{i-1}[..., f]|| per output filter f (the last
  axis), the norms over all other axes; 0 for a filter whose previous weights are all 0 (as
  `relative_norm_change`)."""
  previous = np.atleast_1d(np.asarray(previous, np.float64))
  previous = previous.reshape(-1, previous.shape[-1])
  current = np.asarray(current, np.float64).reshape(previous.shape)
  norms = np.linalg.norm(previous, axis=0)
  changes = np.linalg.norm(current - previous, axis=0)
  return np.divide(changes, norms, out=np.zeros_like(norms), where=norms > 0)


class ChangeRateTracker:
  """Per-layer change rates between consecutive `update` calls (one per epoch).

  Usage (what the trainer does when `config.train.track_change_rate` is set):

    tracker = ChangeRateTracker()
    tracker.update(0, state.params)            # baseline: returns {}
    for epoch in ...:
      ...train...
      rates = tracker.update(epoch, state.params)   # {"frontend": 0.12, "head/Conv_0": ...}

  `history` holds `{"epoch", "rate": {layer: float}, "relative_norm": {layer: float},
  "relative_norm_per_filter": {layer: [F] float64 array}}` per update after the baseline.
  """

  def __init__(self, leaf_names=("kernel",), min_abs: float = 1e-12):
    self.leaf_names = tuple(leaf_names)
    self.min_abs = min_abs
    self.previous: dict[str, np.ndarray] | None = None
    self.history: list[dict] = []

  def update(self, epoch: int, params) -> dict[str, float]:
    """Records `params` after `epoch`; returns each layer's change rate since the last call
    (empty on the first call)."""
    current = layer_weights(params, self.leaf_names)
    rates = {}
    if self.previous is not None:
      common = [name for name in current if name in self.previous
                and self.previous[name].shape == current[name].shape]
      rates = {name: change_rate(self.previous[name], current[name], self.min_abs)
               for name in common}
      norms = {name: relative_norm_change(self.previous[name], current[name]) for name in common}
      per_filter = {name: relative_norm_change_per_filter(self.previous[name], current[name])
                    for name in common}
      self.history.append({"epoch": int(epoch), "rate": rates, "relative_norm": norms,
                           "relative_norm_per_filter": per_filter})
    self.previous = current
    return rates

  def to_json(self) -> list[dict]:
    return list(self.history)

  def verdict(self, name: str = "model") -> str:
    """One line: the mean rate of each layer over the recorded epochs."""
    if not self.history:
      return f"{name}: no change rate recorded"
    layers = self.history[0]["rate"]
    means = {layer: float(np.mean([h["rate"][layer] for h in self.history if layer in h["rate"]]))
             for layer in layers}
    return f"{name}: mean change rate per epoch " + ", ".join(
        f"{layer} {value:.3g}" for layer, value in means.items())


def mean_rates(history: list[dict], key: str = "rate") -> dict[str, float]:
  """The mean over epochs of each layer's rate in a tracker `history`."""
  layers = {layer for entry in history for layer in entry[key]}
  return {layer: float(np.mean([e[key][layer] for e in history if layer in e[key]]))
          for layer in sorted(layers)}


def mean_per_filter(history: list[dict], layers=None) -> dict[str, np.ndarray]:
  """`{layer: [F]}`: each filter's relative norm change ||dw_f|| / ||w_f|| averaged over the
  epochs of a tracker `history` (of `layers`, default all) that recorded it."""
  key = "relative_norm_per_filter"
  recorded = {layer for entry in history for layer in entry.get(key, {})}
  chosen = sorted(recorded) if layers is None else [layer for layer in layers
                                                    if layer in recorded]
  return {layer: np.mean([e[key][layer] for e in history if layer in e.get(key, {})], axis=0)
          for layer in chosen}
