"""The train state, the optimiser and the pure, jittable train and evaluation steps."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from wavejax import errors
from wavejax.training import augment


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics and the raw key data of the dropout keys."""
  batch_stats: Any
  key: jax.Array

  def variables(self, params=None) -> dict:
    variables = {"params": self.params if params is None else params}
    if self.batch_stats:
      variables["batch_stats"] = self.batch_stats
    return variables


def cross_entropy(logits, labels, weights, double_softmax: bool = False):
  """Weighted mean softmax cross-entropy; padded examples have weight 0.

  double_softmax=True reproduces the paper's code, whose model ends in a softmax that the loss
  then treats as logits (a softmax applied twice, which damps the gradients).
  """
  if double_softmax:
    logits = jax.nn.softmax(logits)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def step_key(state: TrainState) -> jax.Array:
  """The dropout key of the state's step: a function of (seed, fold, step) alone, so a resumed
  run draws the same keys as an unbroken one."""
  return jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)


def train_step(state: TrainState, batch: dict, noise=None, *, double_softmax: bool = False,
               augmentation: augment.Settings = augment.Settings()) -> tuple[TrainState, dict]:
  """One Adam step on a batch `{waveforms [B, T], labels [B], weights [B]}`.

  `augmentation` (static) is applied to the batch first, from a key of (seed, fold, step) alone
  (`augment.step_key`), so a resumed run draws what an unbroken one does; `noise`: the clips of
  `augmentation.noise_dir`. Accuracy is counted against the batch's own labels.
  """
  dropout_key = step_key(state)
  batch = augment.augment(
      augment.step_key(jax.random.wrap_key_data(state.key), state.step), batch, augmentation,
      noise)

  def loss_fn(params):
    logits, updates = state.apply_fn(state.variables(params), batch["waveforms"], train=True,
                                     rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    if "targets" in batch:  # mixup's soft labels
      loss = augment.soft_cross_entropy(logits, batch["targets"], batch["weights"],
                                        double_softmax)
    else:
      loss = cross_entropy(logits, batch["labels"], batch["weights"], double_softmax)
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads,
                                batch_stats=updates.get("batch_stats", state.batch_stats))
  weights = batch["weights"]
  correct = (jnp.argmax(logits, -1) == batch["labels"]) * weights
  metrics = {"loss_sum": loss * jnp.sum(weights), "correct": jnp.sum(correct),
             "count": jnp.sum(weights)}
  return state, metrics


def eval_step(state: TrainState, batch: dict) -> tuple[jax.Array, jax.Array]:
  """(predicted class, class probabilities) of every example of `batch`."""
  logits = state.apply_fn(state.variables(), batch["waveforms"], train=False)
  return jnp.argmax(logits, -1), jax.nn.softmax(logits.astype(jnp.float32))


def all_finite(tree) -> jax.Array:
  """True when every floating-point number in `tree` is finite."""
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int, scale: float = 1.0,
                  rate=None):
  """Constant, or the paper code's exponential decay to 0.1x over the whole run.

  `rate` replaces `config.learning_rate * scale` as the initial rate; it may be a traced array
  (`training.group` holds each member's rate in its optimiser state).
  """
  rate = config.learning_rate * scale if rate is None else rate
  if config.lr_schedule == "constant":
    return rate
  if config.lr_schedule == "exponential":
    return optax.exponential_decay(
        rate, transition_steps=max(1, steps_per_epoch * config.num_epochs), decay_rate=0.1)
  raise errors.ConfigError(
      f"config.train.lr_schedule={config.lr_schedule!r}: choose 'constant' or 'exponential'")


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
  """Adam (Sec. 4.1). `frontend_lr_multiplier` scales the rate of the front-end's parameters
  (learnable filters that barely move are the common complaint about raw-waveform front-ends)."""
  multiplier = config.frontend_lr_multiplier
  if multiplier == 1.0:
    return optax.adam(learning_rate(config, steps_per_epoch))
  if multiplier < 0:
    raise errors.ConfigError(f"config.train.frontend_lr_multiplier={multiplier} must be >= 0")
  transforms = {"frontend": optax.adam(learning_rate(config, steps_per_epoch, multiplier)),
                "rest": optax.adam(learning_rate(config, steps_per_epoch))}
  return optax.multi_transform(transforms, frontend_labels)


def frontend_labels(params) -> dict:
  """'frontend' for every parameter under the model's `frontend` module, else 'rest'."""
  return {name: jax.tree.map(lambda _, n=name: "frontend" if n == "frontend" else "rest", tree)
          for name, tree in params.items()}


def init_keys(seed: int, fold: int) -> tuple[jax.Array, jax.Array]:
  """(parameter init key, dropout key) of a fold: the same in training, predict and export."""
  return jax.random.split(jax.random.fold_in(jax.random.key(seed), fold))


def create_train_state(model, config, num_samples: int, steps_per_epoch: int,
                       fold: int) -> TrainState:
  init_key, dropout_key = init_keys(config.seed, fold)
  variables = jax.jit(model.init)(init_key, jnp.zeros((1, num_samples), jnp.float32))
  return TrainState.create(apply_fn=model.apply, params=variables["params"],
                           batch_stats=variables.get("batch_stats", {}),
                           tx=make_optimizer(config.train, steps_per_epoch),
                           key=jax.random.key_data(dropout_key))
