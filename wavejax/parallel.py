"""Device mesh and shardings: data parallelism over every local device.

Parameters are replicated; a batch is split along its first axis over the 1-D `data` mesh. The same
code runs on one CPU, several GPUs or a TPU slice; on CPU,
`XLA_FLAGS=--xla_force_host_platform_device_count=N` simulates N devices.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wavejax import errors

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all local devices)."""
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, field: str) -> int:
  devices = mesh.devices.size
  if batch_size < 1 or batch_size % devices:
    raise errors.ConfigError(
        f"{field}={batch_size} must be a positive multiple of the {devices} devices in use")
  return batch_size


def put_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a host batch on the devices, split along the batch axis."""
  return jax.device_put(batch, batch_sharded(mesh))
