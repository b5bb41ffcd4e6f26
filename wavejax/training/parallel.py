"""Device mesh and shardings: data parallelism over every device of every process.

Parameters are replicated; a batch is split along its first axis over the 1-D `data` mesh. The same
code runs on one CPU, several GPUs, a TPU slice or several hosts (after
`jax.distributed.initialize`, see `wavejax.main --distributed`); on CPU,
`XLA_FLAGS=--xla_force_host_platform_device_count=N` simulates N devices. With several processes
each one loads only its rows of every global batch (`local_rows`) and `put_batch` assembles the
global array from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wavejax import errors

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: the devices of all processes, each process's side by side
  so that it holds one contiguous block of rows of every batch)."""
  if devices is None:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
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


def is_primary() -> bool:
  """True in the process that writes results, logs and summaries (process 0)."""
  return jax.process_index() == 0


def host_rows(batch_size: int, device_processes: Sequence[int], process: int) -> slice:
  """The rows of a global batch that `process` holds when the batch is split evenly over devices
  whose owning processes are `device_processes` (in mesh order)."""
  per_device = batch_size // len(device_processes)
  mine = [i for i, p in enumerate(device_processes) if p == process]
  if not mine or mine != list(range(mine[0], mine[0] + len(mine))):
    raise ValueError(f"process {process} does not own one contiguous block of {device_processes}")
  return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)


def local_rows(mesh: Mesh, batch_size: int) -> slice:
  """This process's rows of a global batch of `batch_size` (all of them with one process)."""
  if jax.process_count() == 1:
    return slice(0, batch_size)
  return host_rows(batch_size, [d.process_index for d in mesh.devices.flat], jax.process_index())


def put_batch(batch: dict, mesh: Mesh) -> dict:
  """Places a batch on the devices, split along the batch axis.

  With one process `batch` is the whole batch. With several it is this process's `local_rows`, and
  the result is the global batch (`jax.make_array_from_process_local_data`).
  """
  sharding = batch_sharded(mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(lambda rows: jax.make_array_from_process_local_data(sharding, rows), batch)
