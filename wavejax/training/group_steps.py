"""The pure parts of grouped training (`group`): Adam with each member's learning rate in its
optimiser state, the members' train states stacked along a leading axis, and the vmapped train,
evaluation and batch-statistics steps over them."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from wavejax.training import augment, parallel, precise_bn, steps

# ------------------------------------------------------------------------------------------------
# The optimiser: Adam with each member's learning rate in its state


class RateState(NamedTuple):
  """A member's learning rate (of one parameter group) and its update count."""
  rate: jax.Array
  count: jax.Array


def scale_by_member_rate(train_config, steps_per_epoch: int, rate: float = 0.0
                         ) -> optax.GradientTransformation:
  """Multiplies updates by minus the learning rate in the state, on `steps.learning_rate`'s
  schedule started from it.

  `rate` only initialises the state: the update reads the state's, so one transformation updates
  every member of a stacked state with its own rate. The product is `optax.scale`'s (or
  `scale_by_schedule`'s): -rate, rounded to float32, times the update.
  """

  def init(params):
    del params
    return RateState(jnp.asarray(rate, jnp.float32), jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    lr = steps.learning_rate(train_config, steps_per_epoch, rate=state.rate)
    lr = lr(state.count) if callable(lr) else lr
    updates = jax.tree.map(lambda g: jnp.asarray(-lr, g.dtype) * g, updates)
    return updates, RateState(state.rate, optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


def member_optimizer(train_config, steps_per_epoch: int, learning_rate: float = 0.0
                     ) -> optax.GradientTransformation:
  """`steps.make_optimizer`'s Adam (schedule and front-end multiplier included) with the learning
  rate held in the optimiser state; `learning_rate` initialises it."""
  steps.make_optimizer(train_config, steps_per_epoch)  # its checks of the schedule and multiplier

  def adam(rate):
    return optax.chain(optax.scale_by_adam(),
                       scale_by_member_rate(train_config, steps_per_epoch, rate))

  multiplier = train_config.frontend_lr_multiplier
  if multiplier == 1.0:
    return adam(learning_rate)
  return optax.multi_transform({"frontend": adam(learning_rate * multiplier),
                                "rest": adam(learning_rate)}, steps.frontend_labels)


# ------------------------------------------------------------------------------------------------
# The stacked state and the vmapped steps


def stack(trees: Sequence):
  """Trees of one structure stacked leaf by leaf along a new leading (member) axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def member_slice(tree, index: int):
  return jax.tree.map(lambda leaf: leaf[index], tree)


def create_group_state(model, configs: Sequence, num_samples: int, steps_per_epoch: int,
                       fold: int) -> steps.TrainState:
  """The members' train states stacked: each one's parameters and dropout key as
  `steps.create_train_state` draws them from its seed, its rate in its optimiser state."""
  tx = member_optimizer(configs[0].train, steps_per_epoch)  # every member's update
  states = []
  for config in configs:
    state = steps.create_train_state(model, config, num_samples, steps_per_epoch, fold)
    own = member_optimizer(config.train, steps_per_epoch, config.train.learning_rate)
    states.append(state.replace(tx=tx, opt_state=own.init(state.params)))
  return stack(states)


def member_batches(batch, slots: tuple[int, ...]):
  """Each member's batch from the group's: `[S, ...]` (one per distinct seed) -> `[M, ...]`, member
  m taking batch `slots[m]`."""
  if len(jax.tree.leaves(batch)[0]) == len(slots) and slots == tuple(range(len(slots))):
    return batch
  index = np.asarray(slots)
  return jax.tree.map(lambda x: x[index], batch)


def group_train_step(state: steps.TrainState, batch: dict, *, slots: tuple[int, ...],
                     double_softmax: bool = False,
                     augmentation: augment.Settings = augment.Settings()
                     ) -> tuple[steps.TrainState, dict]:
  """`steps.train_step` of every member: `[M]`-stacked state, `[S, B, ...]` batches; `[M]`
  metrics. Each member augments its batch from its own step key."""
  step = functools.partial(steps.train_step, double_softmax=double_softmax,
                           augmentation=augmentation)
  return jax.vmap(step)(state, member_batches(batch, slots))


def group_eval_step(state: steps.TrainState, batch: dict, *, slots: tuple[int, ...]
                    ) -> tuple[jax.Array, jax.Array]:
  """`[M, B]` predicted classes and `[M, B, C]` class probabilities."""
  return jax.vmap(steps.eval_step)(state, member_batches(batch, slots))


def group_batch_moments(state: steps.TrainState, waveforms: jax.Array, *,
                        slots: tuple[int, ...]):
  return jax.vmap(precise_bn.batch_moments)(state, member_batches(waveforms, slots))


def select_members(mask: jax.Array, new, old):
  """`new` for the members where `mask` holds, else `old` (new buffers either way)."""
  def pick(n, o):
    return jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(pick, new, old)


def group_sharding(mesh) -> NamedSharding:
  """Group batches `[S, B, ...]`: split along the batch axis over the mesh."""
  return NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS))


def put_group_batch(batch: dict, mesh) -> dict:
  """`parallel.put_batch` for `[S, B, ...]` batches (with several processes, `batch` holds this
  process's rows of the batch axis)."""
  sharding = group_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(lambda rows: jax.make_array_from_process_local_data(sharding, rows), batch)


def jit_train_step(mesh, slots: tuple[int, ...], double_softmax: bool = False,
                   augmentation: augment.Settings = augment.Settings(), options=None):
  replicated = parallel.replicated(mesh)
  step = functools.partial(group_train_step, slots=tuple(slots), double_softmax=double_softmax,
                           augmentation=augmentation)
  return jax.jit(step, in_shardings=(replicated, group_sharding(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0, **(options or {}))


def make_group_train_step(model, config: ml_collections.ConfigDict, num_members: int, *,
                          num_samples: int, steps_per_epoch: int = 1, fold: int = 1, mesh=None):
  """A jitted group train step and its initial state, for timing: `(step, state)`.

  Member i has `config`'s learning rate and seed `config.seed + i`, hence its own data order, so
  `step(state, batch)` takes one batch per member: `{"waveforms": [M, B, T], "labels": [M, B],
  "weights": [M, B]}` (float32, int32, float32), and returns the new state (the argument is
  donated) and `[M]` metric sums. `num_samples` is T (the state's shapes do not depend on it, but
  the initialisation traces the model at that length).
  """
  mesh = parallel.data_mesh() if mesh is None else mesh
  configs = []
  for i in range(num_members):
    member = ml_collections.ConfigDict(config.to_dict())
    member.seed = config.seed + i
    configs.append(member)
  state = create_group_state(model, configs, num_samples, steps_per_epoch, fold)
  step = jit_train_step(mesh, tuple(range(num_members)), config.train.double_softmax)
  return step, jax.device_put(state, parallel.replicated(mesh))
