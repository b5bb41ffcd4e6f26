"""Getting batches to the devices: from the host ahead of the step that uses them, or gathered on
the devices from clips put there once per fold."""

from __future__ import annotations

import collections
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh

from wavejax import errors
from wavejax.data import pipeline
from wavejax.training import parallel

# Batches loaded and sent to the devices ahead of the step that uses them (double buffering).
PREFETCH_BATCHES = 2


def prefetch(iterator, size: int = PREFETCH_BATCHES):
  """Yields `iterator`'s items while keeping `size` of them already produced: the host gathers and
  transfers batch k + size while the (asynchronously dispatched) step k runs."""
  queue = collections.deque()
  for item in iterator:
    queue.append(item)
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


class Timed:
  """Wraps an iterator and adds up the seconds spent waiting for its items (`.seconds`)."""

  def __init__(self, iterator):
    self.iterator, self.seconds = iter(iterator), 0.0

  def __iter__(self):
    return self

  def __next__(self):
    began = time.perf_counter()
    try:
      return next(self.iterator)
    finally:
      self.seconds += time.perf_counter() - began


# The share of a device's memory the fold's clips may take before they stay on the host.
DEVICE_SHARE = 0.4


def device_bytes_limit(devices) -> int | None:
  """The smallest memory of `devices` in bytes, or None where the backend does not say (CPU)."""
  limits = []
  for device in devices:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
      return None
    limits.append(int(stats["bytes_limit"]))
  return min(limits) if limits else None


def use_device(waveforms: np.ndarray, mesh: Mesh, setting: str) -> bool:
  """Whether the fold's clips go to the devices (`config.train.data_on_device`)."""
  if setting not in ("auto", "always", "never"):
    raise errors.ConfigError(f"config.train.data_on_device={setting!r}: choose 'auto', "
                             "'always' or 'never'")
  if setting != "auto":
    return setting == "always"
  if jax.default_backend() == "cpu":  # the host path already reads the memory-mapped cache
    return False
  limit = device_bytes_limit(mesh.devices.flat)
  return limit is not None and waveforms.nbytes <= DEVICE_SHARE * limit


class Feeder:
  """The global batches of an order of utterances, on the devices of `mesh`.

  Host path: each process gathers its rows of every batch from the (memory-mapped) clips and
  sends them (`parallel.put_batch`). Device path (`use_device`): the clips are put on every
  device once, replicated, and a batch is gathered there from its indices, so only indices,
  labels and weights cross from the host per step. Replicated rather than sharded: a batch is a
  random subset of the rows, and rows sharded over devices would need an all-to-all per step.
  Both paths give the same batches.
  """

  def __init__(self, waveforms: np.ndarray, targets: np.ndarray, mesh: Mesh, setting: str):
    self.waveforms, self.targets, self.mesh = waveforms, targets, mesh
    self.on_device = None
    if use_device(waveforms, mesh, setting):
      replicated = parallel.replicated(mesh)
      self.on_device = jax.make_array_from_callback(
          waveforms.shape, replicated, lambda index: np.asarray(waveforms[index]))
      self.gather = jax.jit(_gather, in_shardings=(replicated, parallel.batch_sharded(mesh)),
                            out_shardings=parallel.batch_sharded(mesh))
      logging.info("data on the devices: %d clips, %.1f MB on each of %d", len(waveforms),
                   waveforms.nbytes / 1e6, mesh.devices.size)

  def batches(self, order: np.ndarray, batch_size: int, first_batch: int = 0):
    """Batches `{waveforms, labels, weights}` of `order` (see `pipeline.batches`)."""
    rows = parallel.local_rows(self.mesh, batch_size)
    if self.on_device is None:
      for batch in pipeline.batches(self.waveforms, self.targets, order, batch_size,
                                    first_batch=first_batch, rows=rows):
        yield parallel.put_batch(batch, self.mesh)
      return
    for batch in pipeline.index_batches(self.targets, order, batch_size,
                                        first_batch=first_batch, rows=rows):
      batch = parallel.put_batch(batch, self.mesh)
      indices = batch.pop("indices")
      yield {"waveforms": self.gather(self.on_device, indices), **batch}


def _gather(waveforms, indices):
  return jnp.take(waveforms, indices, axis=0)
