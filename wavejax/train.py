"""Training and evaluation of one cross-validation fold (paper Sec. 4.1).

`train_step` and `eval_step` are pure functions of their inputs, jitted with explicit shardings over
a 1-D data mesh of all local devices (see `wavejax.parallel`). Every epoch evaluates validation and
test; the reported epoch is chosen on validation. A fold with a workdir keeps Orbax checkpoints of
the latest state and the best parameters, and resumes from the latest: the data order of epoch e
and the dropout key of step s are functions of (seed, fold, e) and (seed, s), so a resumed run gives
the same numbers as an unbroken one.

SIGTERM or SIGINT during training saves the state before the next step, with its position in the
epoch and the epoch's running metric sums, and raises `errors.Preempted`; the rerun continues that
epoch from the next batch. A NaN or infinite loss (checked every `FINITE_CHECK_EVERY` steps) or
weight (checked before every save) raises `errors.TrainingError` and is never saved.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state

from wavejax import checkpoint, errors, metrics_log, parallel, preemption, results
from wavejax import config as wavejax_config
from wavejax.analysis import change_rate, learned_filters
from wavejax.data import folds, pipeline
from wavejax.models import create_model, layers

# Steps between checks of the running training loss for NaN/Inf (each waits for the device).
FINITE_CHECK_EVERY = 50
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


def train_step(state: TrainState, batch: dict, double_softmax: bool = False
               ) -> tuple[TrainState, dict]:
  """One Adam step on a batch `{waveforms [B, T], labels [B], weights [B]}`."""
  dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)

  def loss_fn(params):
    logits, updates = state.apply_fn(state.variables(params), batch["waveforms"], train=True,
                                     rngs={"dropout": dropout_key}, mutable=["batch_stats"])
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


def eval_step(state: TrainState, batch: dict) -> jax.Array:
  """Predicted class of every example of `batch`."""
  logits = state.apply_fn(state.variables(), batch["waveforms"], train=False)
  return jnp.argmax(logits, -1)


def all_finite(tree) -> jax.Array:
  """True when every floating-point number in `tree` is finite."""
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


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
  """Pools equal-sized batches' `{"mean", "var"}` into the statistics of their union ("precise
  batch norm", Wu & Johnson 2021): mean of means, and mean of (var + mean^2) minus mean^2."""
  stacked = jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *per_batch)

  def pool(node):
    if set(node) == {"mean", "var"}:
      mean = node["mean"].mean(axis=0)
      second = (node["var"] + node["mean"]**2).mean(axis=0)
      return {"mean": mean, "var": np.maximum(second - mean**2, 0.0)}
    return {name: pool(child) for name, child in node.items()}

  return pool(stacked)


def learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int, scale: float = 1.0):
  """Constant, or the paper code's exponential decay to 0.1x over the whole run."""
  if config.lr_schedule == "constant":
    return config.learning_rate * scale
  if config.lr_schedule == "exponential":
    return optax.exponential_decay(
        config.learning_rate * scale,
        transition_steps=max(1, steps_per_epoch * config.num_epochs), decay_rate=0.1)
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


def create_train_state(model, config, num_samples: int, steps_per_epoch: int,
                       fold: int) -> TrainState:
  init_key, dropout_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), fold))
  variables = jax.jit(model.init)(init_key, jnp.zeros((1, num_samples), jnp.float32))
  return TrainState.create(apply_fn=model.apply, params=variables["params"],
                           batch_stats=variables.get("batch_stats", {}),
                           tx=make_optimizer(config.train, steps_per_epoch),
                           key=jax.random.key_data(dropout_key))


@dataclasses.dataclass
class FoldData:
  """The dataset of one fold: all waveforms plus the split and integer targets."""
  manifest: Any
  waveforms: np.ndarray
  targets: np.ndarray
  split: folds.Fold
  classes: tuple


def load_fold_data(config, fold: int) -> FoldData:
  manifest, waveforms = pipeline.load_dataset(config.data, task=config.task)
  classes = folds.task_classes(config.task, manifest)
  targets = folds.labels(manifest, config.task)
  split = folds.leave_one_session_out(
      manifest, fold, targets, val_size=config.data.val_size, val_from=config.data.val_from,
      seed=config.seed)
  return FoldData(manifest, waveforms, targets, split, classes)


def train_fold(config: ml_collections.ConfigDict, fold: int | None = None,
               workdir=None) -> results.FoldResult:
  """Trains and evaluates one leave-one-session-out fold; returns its `FoldResult`.

  Args:
    config: a config from `configs/<model>.py`.
    fold: 1-based fold (test session); defaults to `config.fold`.
    workdir: where checkpoints and `fold_<k>/result.json` go. A fold whose result exists is not
      trained again; a fold with a checkpoint resumes from it. None: nothing is written.
  """
  config = wavejax_config.resolve(config)
  check_values(config)
  fold = config.fold if fold is None else fold
  if fold is None:
    raise errors.ConfigError("no fold given: set config.fold (e.g. 'configs/x.py:emotion,fold=1') "
                             "or call cross_validate")
  fold_dir = pathlib.Path(workdir) / f"fold_{fold}" if workdir else None
  if fold_dir is not None:
    check_config(config, fold_dir)
    if (fold_dir / "result.json").exists():
      logging.info("fold %d: already complete, reading %s", fold, fold_dir / "result.json")
      return results.load_fold(fold_dir / "result.json")
  data = load_fold_data(config, fold)
  trainer = FoldTrainer(config, data, fold_dir)
  # Only a config that got this far (task, fold, sizes and options checked) is recorded, so a
  # rejected command leaves nothing that blocks the corrected one.
  if fold_dir is not None and parallel.is_primary():
    record_config(config, fold_dir)
    folds.write_assignment(data.manifest, pathlib.Path(workdir) / "folds.json",
                           classes=data.classes)
  result = trainer.run()
  if fold_dir is not None and parallel.is_primary():
    results.save_fold(result, fold_dir / "result.json")
  return result


def check_values(config) -> None:
  """Rejects values that would otherwise fail late (after an epoch) or train silently wrong."""
  lr = config.train.learning_rate
  if not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
    raise errors.ConfigError(f"config.train.learning_rate={lr!r} must be a positive number")
  if config.train.select_metric not in ("wa", "ua"):
    raise errors.ConfigError(
        f"config.train.select_metric={config.train.select_metric!r}: choose 'wa' or 'ua'")
  rate = config.data.sample_rate
  if not isinstance(rate, int) or rate < 1:
    raise errors.ConfigError(f"config.data.sample_rate={rate!r} must be a positive integer (Hz)")
  seconds = pipeline.clip_seconds(config.data)
  field = "data.builtin.clip_seconds" if config.data.root is None else "data.clip_seconds"
  if not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
    raise errors.ConfigError(f"config.{field}={seconds!r} must be a positive number of seconds")


def config_json(config) -> dict:
  """The config as plain JSON, without the fold (one workdir holds every fold)."""
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  data.pop("fold", None)
  return data


def check_config(config, fold_dir: pathlib.Path) -> None:
  """Refuses to mix runs of different configs in one workdir: the fold's own recorded config and
  those of the workdir's other folds must all match `config`."""
  current = config_json(config)
  recorded = sorted(fold_dir.parent.glob("fold_*/config.json"))
  own = fold_dir / "config.json"
  for path in sorted(recorded, key=lambda p: p != own):  # the fold's own first
    changed = sorted(_differences(json.loads(path.read_text()), current))
    if changed:
      raise errors.ConfigError(
          f"{path.parent} was written by a different config (changed: {', '.join(changed[:5])}); "
          "use a new --workdir or the original config")


def record_config(config, fold_dir: pathlib.Path) -> None:
  """Writes the fold's `config.json` (once; `check_config` compares later runs with it)."""
  path = fold_dir / "config.json"
  if not path.exists():
    results.write_json(path, config_json(config))


def _differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
  """Dotted fields that differ; a field missing from `stored` whose current value is its
  `wavejax_config.ADDED_FIELDS` value (the behaviour before the field existed) does not."""
  out = []
  for key in set(stored) | set(current):
    old, new = stored.get(key), current.get(key)
    if isinstance(old, dict) and isinstance(new, dict):
      out += _differences(old, new, f"{prefix}{key}.")
    elif key not in stored and wavejax_config.ADDED_FIELDS.get(f"{prefix}{key}", object()) == new:
      continue
    elif old != new:
      out.append(f"{prefix}{key}")
  return out


class FoldTrainer:
  """The epoch loop of one fold: train, evaluate val and test, checkpoint, select."""

  def __init__(self, config, data: FoldData, fold_dir: pathlib.Path | None):
    self.config, self.data, self.fold_dir = config, data, fold_dir
    self.fold = data.split.number
    self.mesh = parallel.data_mesh()
    train_cfg = config.train
    self.batch_size = parallel.check_batch_size(train_cfg.batch_size, self.mesh,
                                                "config.train.batch_size")
    self.eval_batch_size = parallel.check_batch_size(train_cfg.eval_batch_size, self.mesh,
                                                     "config.train.eval_batch_size")
    self.steps_per_epoch = -(-len(data.split.train) // self.batch_size)
    model = create_model(config.model, num_classes=len(data.classes))
    self.model = model
    state = create_train_state(model, config, data.waveforms.shape[1], self.steps_per_epoch,
                               self.fold)
    self.state = jax.device_put(state, parallel.replicated(self.mesh))
    replicated, sharded = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
    step = functools.partial(train_step, double_softmax=train_cfg.double_softmax)
    self.train_step = jax.jit(step, in_shardings=(replicated, sharded),
                              out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval_step = jax.jit(eval_step, in_shardings=(replicated, sharded),
                             out_shardings=replicated)
    self.all_finite = jax.jit(all_finite, in_shardings=replicated, out_shardings=replicated)
    self.batch_moments = jax.jit(batch_moments, in_shardings=(replicated, sharded),
                                 out_shardings=replicated)
    self.checkpointer = (checkpoint.Checkpointer(fold_dir / "checkpoints", cleanup=True)
                         if fold_dir is not None and train_cfg.checkpoint else None)
    self.saved_step = None  # the optimiser step of the latest checkpoint
    self.resume_at = None  # {"step_in_epoch", "sums", "seconds"}: a checkpoint taken mid-epoch
    self.stop = preemption.StopSignals(enabled=False)
    self.history: list[dict] = []
    self.change_rate = (change_rate.ChangeRateTracker()
                        if train_cfg.get("track_change_rate", False) else None)
    self.metrics_log = (metrics_log.MetricsLog(fold_dir, train_cfg.get("tensorboard", False))
                        if fold_dir is not None and parallel.is_primary() else None)
    self.filter_images_every = int(train_cfg.get("filter_images_every", 0))
    self.best = None  # {"params", "batch_stats"} of the best epoch on validation

  def run(self) -> results.FoldResult:
    """Trains the remaining epochs and returns the fold's result. With checkpoints, SIGTERM and
    SIGINT save the state and raise `errors.Preempted` while it runs (see `preemption`)."""
    try:
      self.stop = preemption.StopSignals(enabled=self.checkpointer is not None)
      with self.stop:
        return self.train()
    finally:
      if self.checkpointer is not None:
        self.checkpointer.close()
      if self.metrics_log is not None:
        self.metrics_log.close()

  def train(self) -> results.FoldResult:
    start_epoch = self.restore()
    self.start_monitoring(start_epoch)
    epoch_times = []
    for epoch in range(start_epoch + 1, self.config.train.num_epochs + 1):
      began = time.perf_counter()
      record = self.train_epoch(epoch)
      record.update(self.evaluate_epoch())
      if self.change_rate is not None:  # Fig. 4; before after_epoch, which checkpoints it
        record["change_rate"] = self.change_rate.update(epoch, self.state.params)
      epoch_times.append(time.perf_counter() - began)
      self.history.append(record)
      self.monitor_epoch(epoch, record)  # before the checkpoint: a resume rewrites its lines
      self.after_epoch(epoch, record)
      self.log_epoch(epoch, record, epoch_times)
    return self.fold_result()

  def start_monitoring(self, start_epoch: int) -> None:
    """The change-rate baseline and the initial filters, before the first (or resumed) epoch."""
    if self.change_rate is not None:
      self.change_rate.update(start_epoch, self.state.params)
    if start_epoch == 0 and self.resume_at is None:
      self.write_filters(0)

  def monitor_epoch(self, epoch: int, record: dict) -> None:
    """metrics.jsonl (+ TensorBoard) every epoch, the filters every `filter_images_every`."""
    if self.metrics_log is None:
      return
    self.metrics_log.write(epoch, record)
    if self.filter_images_every and epoch % self.filter_images_every == 0:
      self.write_filters(epoch)

  def write_filters(self, epoch: int) -> None:
    """Saves the front-end's filters (Sec. 4.3, Fig. 6) when `filter_images_every` is set."""
    if self.metrics_log is None or not self.filter_images_every:
      return
    try:
      kernel = learned_filters.frontend_kernel(self.model, self.state.params)
    except errors.ConfigError as e:
      logging.warning("config.train.filter_images_every: %s; not saving filters", e)
      self.filter_images_every = 0
      return
    self.metrics_log.write_filters(epoch, kernel, self.config.model.sample_rate)

  def restore(self) -> int:
    """Loads the latest checkpoint if there is one; returns the last finished epoch."""
    if self.checkpointer is None:
      return 0
    restored = self.checkpointer.restore_latest(self.state)
    if restored is None:
      return 0
    self.state, meta = restored
    self.history = meta["history"]
    self.saved_step = int(self.state.step)
    self.resume_at = meta.get("partial")
    best = self.checkpointer.restore_best(self.weights())
    self.best = None if best is None else best[0]
    if self.resume_at is None:
      logging.info("fold %d: resumed after epoch %d from %s", self.fold, meta["epoch"],
                   self.fold_dir / "checkpoints")
    else:
      logging.info("fold %d: resumed in epoch %d at step %d/%d from %s", self.fold,
                   meta["epoch"] + 1, self.resume_at["step_in_epoch"], self.steps_per_epoch,
                   self.fold_dir / "checkpoints")
    return int(meta["epoch"])

  def batches(self, order: np.ndarray, batch_size: int, first_batch: int = 0):
    """The global batches of `order` on the mesh; this process loads only its rows of each."""
    rows = parallel.local_rows(self.mesh, batch_size)
    for batch in pipeline.batches(self.data.waveforms, self.data.targets, order, batch_size,
                                  first_batch=first_batch, rows=rows):
      yield parallel.put_batch(batch, self.mesh)

  def train_epoch(self, epoch: int) -> dict:
    """One epoch of training (the rest of it after a mid-epoch resume); its loss and accuracy."""
    split, train_cfg = self.data.split, self.config.train
    order = pipeline.epoch_order(split.train, self.data.targets, seed=self.config.seed,
                                 fold=self.fold, epoch=epoch if train_cfg.reshuffle else 1,
                                 balanced=train_cfg.balanced_sampling)
    first, sums, seconds = self.take_resume_point()
    began = time.perf_counter()
    loader = Timed(prefetch(self.batches(order, self.batch_size, first)))
    for step, batch in enumerate(loader, first):
      if self.stop.requested():
        self.preempt(epoch, step, sums, seconds + time.perf_counter() - began)
      self.state, metrics = self.train_step(self.state, batch)
      sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
      if (step + 1) % FINITE_CHECK_EVERY == 0:
        self.check_finite(epoch, step + 1, sums)
    # Steps are dispatched asynchronously: wait for the last one, or the time (and utt/s) would
    # count only the dispatching when the device is the bottleneck.
    sums = jax.block_until_ready(sums)
    seconds += time.perf_counter() - began
    self.check_finite(epoch, self.steps_per_epoch, sums, weights=True)
    sums = jax.device_get(sums)
    return {"epoch": epoch, "train_loss": float(sums["loss_sum"] / sums["count"]),
            "train_running_acc": float(sums["correct"] / sums["count"]),
            "train_seconds": seconds, "data_seconds": loader.seconds,
            "utterances_per_s": float(sums["count"]) / seconds}

  def take_resume_point(self) -> tuple[int, dict | None, float]:
    """(first batch, running metric sums, seconds spent) of the epoch about to be trained: where a
    mid-epoch checkpoint left it, else (0, None, 0)."""
    resume_at, self.resume_at = self.resume_at, None
    if resume_at is None:
      return 0, None, 0.0
    sums = {name: np.float32(value) for name, value in resume_at["sums"].items()}
    return int(resume_at["step_in_epoch"]), sums, float(resume_at["seconds"])

  def check_finite(self, epoch: int, step: int, sums, weights: bool = False) -> None:
    """Raises `errors.TrainingError` when the running loss (or, with weights=True, a weight) is NaN
    or infinite; the caller then saves nothing, so the last good checkpoint stays."""
    sums = jax.device_get(sums)
    loss = float(sums["loss_sum"] / max(float(sums["count"]), 1.0))
    problem = None if np.isfinite(loss) else f"the training loss is {loss}"
    if problem is None and weights and not bool(self.all_finite(self.weights())):
      problem = "a weight is NaN or infinite"
    if problem is not None:
      raise errors.TrainingError(
          f"fold {self.fold} epoch {epoch} step {step}/{self.steps_per_epoch}: {problem}; lower "
          "config.train.learning_rate (the last good checkpoint is kept)")

  def preempt(self, epoch: int, step: int, sums, seconds: float) -> None:
    """Saves the state before `step` of `epoch` (with the epoch's running sums, so that a rerun
    continues this epoch exactly) and raises `errors.Preempted`."""
    resumes = f"epoch {epoch} step {step}"
    if int(self.state.step) not in (0, self.saved_step):
      if self.change_rate is not None:
        resumes = (f"the start of epoch {epoch}: config.train.track_change_rate saves no "
                   "mid-epoch state")
      else:
        self.check_finite(epoch, step, sums, weights=True)
        partial = {"step_in_epoch": step, "seconds": seconds,
                   "sums": {name: float(value) for name, value in jax.device_get(sums).items()}}
        self.checkpointer.save_latest(int(self.state.step), self.state,
                                      {"epoch": epoch - 1, "history": self.history,
                                       "partial": partial})
        self.saved_step = int(self.state.step)
    raise errors.Preempted(
        f"preempted by {self.stop.signal_name} at fold {self.fold} epoch {epoch} step "
        f"{step}/{self.steps_per_epoch}; rerun the same command to resume (from {resumes})",
        self.stop.signum)

  def weights(self) -> dict:
    return {"params": self.state.params, "batch_stats": self.state.batch_stats}

  def predict(self, indices: np.ndarray, weights=None) -> np.ndarray:
    state = self.state if weights is None else self.state.replace(**weights)
    predictions = [np.asarray(self.eval_step(state, batch)) for batch in self.eval_batches(indices)]
    return np.concatenate(predictions)[:len(indices)]

  def eval_batches(self, indices: np.ndarray):
    """`indices` in full evaluation batches, the rest in one batch padded to a power of two."""
    sizes = pipeline.evaluation_batch_sizes(len(indices), self.eval_batch_size,
                                            self.mesh.devices.size)
    start = 0
    for size in sizes:
      yield from self.batches(indices[start:start + size], size)
      start += size

  def metrics(self, indices: np.ndarray, weights=None) -> dict:
    if self.config.train.drop_last_eval_batch and len(indices) >= self.eval_batch_size:
      indices = indices[:len(indices) // self.eval_batch_size * self.eval_batch_size]
    return results.classification_metrics(self.data.targets[indices],
                                          self.predict(indices, weights), len(self.data.classes))

  def evaluate_epoch(self) -> dict:
    self.recalibrate_batch_norm()
    return {"val": self.metrics(self.data.split.val), "test": self.metrics(self.data.split.test)}

  def recalibrate_batch_norm(self) -> None:
    """Sets the batch norm statistics to their population values on `precise_bn_batches` full
    training batches (a fixed shuffle of the fold), when the model has batch norm."""
    num_batches = int(self.config.train.get("precise_bn_batches", 0))
    if num_batches <= 0 or not self.state.batch_stats:
      return
    train = self.data.split.train
    order = pipeline.epoch_order(train, self.data.targets, seed=self.config.seed, fold=self.fold,
                                 epoch=0, balanced=False)
    full = max(1, len(order) // self.batch_size) * self.batch_size
    order = order[:min(full, num_batches * self.batch_size)]
    per_batch = [self.batch_moments(self.state, batch["waveforms"])
                 for batch in self.batches(order, self.batch_size)]
    statistics = population_statistics(per_batch)
    statistics = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), statistics,
                              jax.device_get(self.state.batch_stats))
    self.state = self.state.replace(
        batch_stats=jax.device_put(statistics, parallel.replicated(self.mesh)))

  def after_epoch(self, epoch: int, record: dict) -> None:
    metric = self.config.train.select_metric  # checked by `check_values` before training
    best_so_far = max((r["val"][metric] for r in self.history[:-1]), default=-1.0)
    improved = record["val"][metric] > best_so_far
    if improved:  # a copy: the next train_step donates (and frees) the state's buffers
      self.best = jax.tree.map(jnp.copy, self.weights())
    if self.checkpointer is not None:
      meta = {"epoch": epoch, "history": self.history}
      if improved:
        self.checkpointer.save_best(epoch, self.weights(), meta)
      step = int(self.state.step)
      self.checkpointer.save_latest(step, self.state, meta)
      self.saved_step = step

  def log_epoch(self, epoch: int, record: dict, epoch_times: list[float]) -> None:
    remaining = (self.config.train.num_epochs - epoch) * float(np.mean(epoch_times))
    logging.info(
        "fold %d epoch %d/%d: loss %.4f acc %.3f | val WA %.3f UA %.3f | test WA %.3f UA %.3f "
        "| %.1f utt/s, data %.0f%% | ETA %s", self.fold, epoch, self.config.train.num_epochs,
        record["train_loss"], record["train_running_acc"], record["val"]["wa"],
        record["val"]["ua"], record["test"]["wa"], record["test"]["ua"],
        record["utterances_per_s"], 100 * record.get("data_seconds", 0.0) / record["train_seconds"],
        format_seconds(remaining))

  def fold_result(self) -> results.FoldResult:
    if not self.history:
      raise errors.ConfigError("config.train.num_epochs must be at least 1")
    metric = self.config.train.select_metric
    selected = max(self.history, key=lambda r: r["val"][metric])
    best_test = max(self.history, key=lambda r: r["test"]["wa"])
    train_metrics = self.metrics(self.data.split.train, self.best)
    split = self.data.split
    return results.FoldResult(
        model=self.config.model.name, task=self.config.task,
        dataset=self.data.manifest.dataset, fold=self.fold, test_session=split.test_session,
        classes=list(self.data.classes), num_train=len(split.train), num_val=len(split.val),
        num_test=len(split.test), selected_epoch=selected["epoch"], val=selected["val"],
        test=selected["test"], train_accuracy=train_metrics["wa"],
        best_test_epoch=best_test["epoch"], best_test_wa=best_test["test"]["wa"],
        best_test_ua=best_test["test"]["ua"],
        train_utterances_per_s=float(np.median([r["utterances_per_s"] for r in self.history])),
        history=self.history)


def format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s"


def cross_validate(config: ml_collections.ConfigDict, workdir=None,
                   fold_numbers=None) -> tuple[list[results.FoldResult], dict]:
  """Runs `train_fold` on every fold (or `fold_numbers`); writes the summary of every finished
  fold of `workdir` into it.

  Returns the fold results and the summary dict (see `results.summarize`).
  """
  if fold_numbers is None:
    fold_numbers = ([config.fold] if config.fold is not None
                    else range(1, folds.num_folds(pipeline.load_dataset(config.data, task=config.task)[0]) + 1))
  fold_results = [train_fold(config, fold, workdir) for fold in fold_numbers]
  if workdir is None:
    return fold_results, results.summarize(fold_results)
  # The workdir's summary covers every finished fold in it (all of one config, see
  # check_config), not only this call's: `--folds=2` after `--folds=1` keeps fold 1 in it.
  finished = {r.fold: r for r in map(results.load_fold,
                                     pathlib.Path(workdir).glob("fold_*/result.json"))}
  finished.update({r.fold: r for r in fold_results})
  summary = results.summarize(list(finished.values()))
  if parallel.is_primary():
    results.write_json(pathlib.Path(workdir) / "summary.json", summary)
    results.write_text(pathlib.Path(workdir) / "summary.md", results.markdown_table(summary))
  return fold_results, summary
