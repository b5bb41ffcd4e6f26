"""The epoch loop of one fold: train, evaluate validation and test, checkpoint, select.

A fold with a workdir keeps Orbax checkpoints of the latest state and the best parameters and
resumes from the latest: the data order of epoch e and the dropout key of step s are functions of
(seed, fold, e) and (seed, fold, s), so a resumed run gives the same numbers as an unbroken one.

SIGTERM or SIGINT during training saves the state before the next step, with its position in the
epoch and the epoch's running metric sums, and raises `errors.Preempted`; the rerun continues that
epoch from the next batch. A NaN or infinite loss (checked every `FINITE_CHECK_EVERY` steps) or
weight (checked before every save) raises `errors.TrainingError` and is never saved.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from wavejax import errors
from wavejax.data import cache, pipeline
from wavejax.models import create_model
from wavejax.reporting import predictions as predictions_lib
from wavejax.reporting import results
from wavejax.training import augment, checkpoint, feeding, parallel, precise_bn, preemption, steps
from wavejax.training import hooks as hooks_lib

# Steps between checks of the running training loss for NaN/Inf (each waits for the device).
FINITE_CHECK_EVERY = 50


@dataclasses.dataclass
class ResumePoint:
  """Where a fold's training stands; what the latest checkpoint restores.

  Attributes:
    epoch: the last finished epoch (0: none).
    history: one record per finished epoch.
    partial: `{"step_in_epoch", "sums", "seconds"}` of epoch + 1 when the checkpoint was taken
      mid-epoch (a preemption), else None.
    saved_step: the optimiser step of the latest checkpoint (None: no checkpoint yet).
  """
  epoch: int = 0
  history: list = dataclasses.field(default_factory=list)
  partial: dict | None = None
  saved_step: int | None = None


@dataclasses.dataclass
class FoldData:
  """The dataset of one fold: all waveforms plus the split and integer targets."""
  manifest: object
  waveforms: np.ndarray
  targets: np.ndarray
  split: object  # data.folds.Fold
  classes: tuple


class FoldTrainer:
  """Trains one fold: `FoldTrainer(config, data, fold_dir).run()` -> `FoldResult`."""

  def __init__(self, config, data: FoldData, fold_dir: pathlib.Path | None, hooks=None):
    self.config, self.data, self.fold_dir = config, data, fold_dir
    self.fold = data.split.number
    self.mesh = parallel.data_mesh()
    train_cfg = config.train
    self.batch_size = parallel.check_batch_size(train_cfg.batch_size, self.mesh,
                                                "config.train.batch_size")
    self.eval_batch_size = parallel.check_batch_size(train_cfg.eval_batch_size, self.mesh,
                                                     "config.train.eval_batch_size")
    self.steps_per_epoch = -(-len(data.split.train) // self.batch_size)
    self.model = create_model(config.model, num_classes=len(data.classes))
    state = steps.create_train_state(self.model, config, data.waveforms.shape[1],
                                     self.steps_per_epoch, self.fold)
    replicated, sharded = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
    self.state = jax.device_put(state, replicated)
    augmentation = augment.settings_from_config(train_cfg.augment, len(data.classes),
                                                config.data.sample_rate)
    self.noise = (None if augmentation.noise_dir is None else jax.device_put(
        augment.load_noise_clips(augmentation.noise_dir, config.data.sample_rate,
                                 data.waveforms.shape[1]), replicated))
    options = jit_options(train_cfg)
    step = jax.jit(functools.partial(steps.train_step, double_softmax=train_cfg.double_softmax,
                                     augmentation=augmentation),
                   in_shardings=(replicated, sharded, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=0, **options)
    self.train_step = lambda state, batch: step(state, batch, self.noise)
    self.eval_step = jax.jit(steps.eval_step, in_shardings=(replicated, sharded),
                             out_shardings=replicated, **options)
    self.all_finite = jax.jit(steps.all_finite, in_shardings=replicated,
                              out_shardings=replicated)
    self.batch_moments = jax.jit(precise_bn.batch_moments, in_shardings=(replicated, sharded),
                                 out_shardings=replicated, **options)
    self.feeder = feeding.Feeder(data.waveforms, data.targets, self.mesh,
                                 train_cfg.data_on_device)
    self.checkpointer = (checkpoint.Checkpointer(fold_dir / "checkpoints", cleanup=True)
                         if fold_dir is not None and train_cfg.checkpoint else None)
    self.stop = preemption.StopSignals(enabled=False)
    self.hooks = hooks_lib.default_hooks(config, fold_dir) if hooks is None else list(hooks)
    self.resume = ResumePoint()
    self.best = None  # {"params", "batch_stats"} of the best epoch on validation
    # {"epoch", "val", "test"}: the class probabilities of the best epoch on test (paper-style).
    self.best_test = None
    self.last_probabilities = {}  # split -> `[N, C]` of the latest evaluation

  @property
  def history(self) -> list[dict]:
    return self.resume.history

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
      for hook in self.hooks:
        hook.close()

  def train(self) -> results.FoldResult:
    self.restore()
    for hook in self.hooks:
      hook.start(self, self.resume.epoch)
    epoch_times = []
    for epoch in range(self.resume.epoch + 1, self.config.train.num_epochs + 1):
      began = time.perf_counter()
      record = self.train_epoch(epoch)
      record.update(self.evaluate_epoch())
      for hook in self.hooks:  # before the checkpoint: a resume rewrites what they wrote
        hook.epoch_end(self, epoch, record)
      epoch_times.append(time.perf_counter() - began)
      self.history.append(record)
      self.after_epoch(epoch, record)
      self.log_epoch(epoch, record, epoch_times)
    return self.fold_result()

  def restore(self) -> int:
    """Loads the latest checkpoint, if there is one, into the state and `self.resume`, and the best
    weights of the epoch its history selects; returns the last finished epoch."""
    if self.checkpointer is None:
      return 0
    restored = self.checkpointer.restore_latest(self.state, required=("epoch", "history"))
    if restored is None:
      self.checkpointer.discard_best_from(1)  # an attempt whose latest checkpoint is gone
      return 0
    self.state, meta = restored
    self.resume = ResumePoint(epoch=int(meta["epoch"]), history=meta["history"],
                              partial=meta.get("partial"), saved_step=int(self.state.step))
    self.best_test = meta.get("best_test_probabilities")
    self.restore_best(meta)
    where = self.fold_dir / "checkpoints"
    if self.resume.partial is None:
      logging.info("fold %d: resumed after epoch %d from %s", self.fold, self.resume.epoch, where)
    else:
      logging.info("fold %d: resumed in epoch %d at step %d/%d from %s", self.fold,
                   self.resume.epoch + 1, self.resume.partial["step_in_epoch"],
                   self.steps_per_epoch, where)
    return self.resume.epoch

  def restore_best(self, meta: dict) -> None:
    """Loads `best/<e>` for the epoch e the restored history selects. `latest` is saved before
    `best` (`after_epoch`), so a run stopped between the two lacks best/<e> for the last epoch:
    its weights are the restored state's, and they are saved as best/<e> now."""
    metric = self.config.train.select_metric
    selected = select_epoch(self.history, metric)
    self.checkpointer.discard_best_from(self.resume.epoch + 1)
    if selected is None:
      return
    steps = self.checkpointer.best_steps()
    if selected in steps:
      try:
        self.best = self.checkpointer.restore_best(self.weights(), selected)[0]
        return
      except errors.CheckpointError:
        if selected != self.resume.epoch or self.resume.partial is not None:
          raise
        logging.warning("fold %d: best/%d is damaged; saving it again from latest", self.fold,
                        selected)
    elif selected != self.resume.epoch or self.resume.partial is not None:
      raise errors.CheckpointError(
          f"{self.fold_dir / 'checkpoints' / 'best'}: no checkpoint of epoch {selected}, the "
          f"best on validation (found: {steps or 'none'}); delete {self.fold_dir} and rerun the "
          "training command: the fold trains again from its first epoch")
    self.best = jax.tree.map(jnp.copy, self.weights())
    self.checkpointer.save_best(selected, self.best, meta)

  def batches(self, order: np.ndarray, batch_size: int, first_batch: int = 0):
    """The global batches of `order` on the mesh (`feeding.Feeder`)."""
    return self.feeder.batches(order, batch_size, first_batch)

  def train_epoch(self, epoch: int) -> dict:
    """One epoch of training (the rest of it after a mid-epoch resume); its loss and accuracy."""
    split, train_cfg = self.data.split, self.config.train
    order = pipeline.epoch_order(split.train, self.data.targets, seed=self.config.seed,
                                 fold=self.fold, epoch=epoch if train_cfg.reshuffle else 1,
                                 balanced=train_cfg.balanced_sampling)
    first, sums, seconds = self.take_partial_epoch()
    began = time.perf_counter()
    loader = feeding.Timed(feeding.prefetch(self.batches(order, self.batch_size, first)))
    for step, batch in enumerate(loader, first):
      if self.stop.requested():
        self.preempt(epoch, step, sums, seconds + time.perf_counter() - began)
      self.state, metrics = self.train_step(self.state, batch)
      sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
      if (step + 1) % FINITE_CHECK_EVERY == 0:
        self.check_finite(epoch, step + 1, sums)
      for hook in self.hooks:
        hook.step_end(self, epoch, step)
    # Steps are dispatched asynchronously: wait for the last one, or the time (and utt/s) would
    # count only the dispatching when the device is the bottleneck.
    sums = jax.block_until_ready(sums)
    seconds += time.perf_counter() - began
    self.check_finite(epoch, self.steps_per_epoch, sums, weights=True)
    return train_record(epoch, jax.device_get(sums), seconds, loader.seconds)

  def take_partial_epoch(self) -> tuple[int, dict | None, float]:
    """(first batch, running metric sums, seconds spent) of the epoch about to be trained: where a
    mid-epoch checkpoint left it, else (0, None, 0). Consumes `resume.partial`."""
    partial, self.resume.partial = self.resume.partial, None
    if partial is None:
      return 0, None, 0.0
    sums = {name: np.float32(value) for name, value in partial["sums"].items()}
    return int(partial["step_in_epoch"]), sums, float(partial["seconds"])

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
          f"fold {self.fold} epoch {epoch} step {step}/{self.steps_per_epoch}: {problem}; "
          f"{self.nonfinite_cause()}")

  def nonfinite_cause(self) -> str:
    """Why the training became NaN/Inf and what to do: a damaged input (the restored weights are
    checked when restored), else the learning rate."""
    waveforms = self.data.waveforms
    for index in self.data.split.train:
      if not np.isfinite(waveforms[index]).all():
        utterance = self.data.manifest[int(index)]
        cache_dir = self.config.data.cache_dir
        cache_dir = f"{cache_dir}/decoded" if cache_dir else cache.default_cache_dir() / "decoded"
        return (f"the input is damaged, not the learning rate: utterance {utterance.utt_id} "
                f"({utterance.path}) has NaN or infinite samples; repair or remove that file, "
                f"delete the decoded cache {cache_dir} and rerun")
    if self.noise is not None and not bool(self.all_finite(self.noise)):
      return (f"the input is damaged, not the learning rate: a noise clip of "
              f"{self.config.train.augment.noise_dir} has NaN or infinite samples; repair or "
              "remove it and rerun")
    return ("lower config.train.learning_rate (the last good checkpoint is kept) and rerun with "
            "a new --workdir (a run with another rate is another config)")

  def preempt(self, epoch: int, step: int, sums, seconds: float) -> None:
    """Saves the state before `step` of `epoch` (with the epoch's running sums, so that a rerun
    continues this epoch exactly) and raises `errors.Preempted`."""
    resumes = f"epoch {epoch} step {step}"
    if int(self.state.step) not in (0, self.resume.saved_step):
      if not all(hook.resumable_mid_epoch for hook in self.hooks):
        resumes = (f"the start of epoch {epoch}: config.train.track_change_rate saves no "
                   "mid-epoch state")
      else:
        self.check_finite(epoch, step, sums, weights=True)
        partial = {"step_in_epoch": step, "seconds": seconds,
                   "sums": {name: float(value) for name, value in jax.device_get(sums).items()}}
        self.save_latest({"epoch": epoch - 1, "history": self.history, "partial": partial,
                          "best_test_probabilities": self.best_test})
    raise errors.Preempted(
        f"preempted by {self.stop.signal_name} at fold {self.fold} epoch {epoch} step "
        f"{step}/{self.steps_per_epoch}; rerun the same command to resume (from {resumes})",
        self.stop.signum)

  def save_latest(self, meta: dict) -> None:
    step = int(self.state.step)
    self.checkpointer.save_latest(step, self.state, meta)
    self.resume.saved_step = step

  def weights(self) -> dict:
    return {"params": self.state.params, "batch_stats": self.state.batch_stats}

  def predict(self, indices: np.ndarray, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted classes, `[N, C]` class probabilities) of the utterances `indices`."""
    state = self.state if weights is None else self.state.replace(**weights)
    outputs = [jax.device_get(self.eval_step(state, batch))
               for batch in self.eval_batches(indices)]
    predicted = np.concatenate([p for p, _ in outputs])[:len(indices)]
    probabilities = np.concatenate([q for _, q in outputs])[:len(indices)]
    return predicted, probabilities

  def eval_batches(self, indices: np.ndarray):
    """`indices` in full evaluation batches, the rest in one batch padded to a power of two."""
    sizes = pipeline.evaluation_batch_sizes(len(indices), self.eval_batch_size,
                                            self.mesh.devices.size)
    start = 0
    for size in sizes:
      yield from self.batches(indices[start:start + size], size)
      start += size

  def evaluated(self, indices: np.ndarray) -> np.ndarray:
    """The utterances of `indices` that evaluation scores (all, or whole batches only with
    `train.drop_last_eval_batch`, as the paper's code)."""
    return evaluated_indices(self.config, indices, self.eval_batch_size)

  def metrics(self, indices: np.ndarray, weights=None, split: str | None = None) -> dict:
    """WA, UA, F1 and the confusion matrix of `indices`; with `split`, their probabilities are
    kept in `last_probabilities[split]`."""
    indices = self.evaluated(indices)
    predicted, probabilities = self.predict(indices, weights)
    if split is not None:
      self.last_probabilities[split] = probabilities
    return results.classification_metrics(self.data.targets[indices], predicted,
                                          len(self.data.classes))

  def write_predictions(self, selected_epoch: int, best_test_epoch: int) -> None:
    """`fold_<k>/predictions.csv` (`reporting.predictions`): per validation and test utterance,
    the predictions of the selected epoch (made again from its weights) and of the best epoch on
    test (kept when that epoch was evaluated; a run resumed from an older version's checkpoint
    may lack them, and then the file holds the selected epoch's only)."""
    if self.fold_dir is None:
      return
    selected = {}
    for split in ("val", "test"):  # every process evaluates: the steps are collective
      selected[split] = self.predict(self.evaluated(getattr(self.data.split, split)), self.best)
    write_predictions(self.fold_dir, self.data, self.evaluated, selected_epoch, selected,
                      best_test_epoch, self.best_test)

  def evaluate_epoch(self) -> dict:
    self.recalibrate_batch_norm()
    return {"val": self.metrics(self.data.split.val, split="val"),
            "test": self.metrics(self.data.split.test, split="test")}

  def recalibrate_batch_norm(self) -> None:
    """Sets the batch norm statistics to their population values on `precise_bn_batches` full
    training batches (a fixed shuffle of the fold), when the model has batch norm."""
    num_batches = int(self.config.train.precise_bn_batches)
    if num_batches <= 0 or not self.state.batch_stats:
      return
    train = self.data.split.train
    order = pipeline.epoch_order(train, self.data.targets, seed=self.config.seed, fold=self.fold,
                                 epoch=0, balanced=False)
    full = max(1, len(order) // self.batch_size) * self.batch_size
    order = order[:min(full, num_batches * self.batch_size)]
    per_batch = [self.batch_moments(self.state, batch["waveforms"])
                 for batch in self.batches(order, self.batch_size)]
    statistics = precise_bn.population_statistics(per_batch)
    statistics = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), statistics,
                              jax.device_get(self.state.batch_stats))
    self.state = self.state.replace(
        batch_stats=jax.device_put(statistics, parallel.replicated(self.mesh)))

  def after_epoch(self, epoch: int, record: dict) -> None:
    """Keeps the best weights on validation and checkpoints the epoch (latest, then best)."""
    improved = is_new_best(self.history, self.config.train.select_metric)
    if improved:  # a copy: the next train_step donates (and frees) the state's buffers
      self.best = jax.tree.map(jnp.copy, self.weights())
    if is_new_best_test(self.history):
      self.best_test = {"epoch": epoch, **{split: probabilities.tolist() for split, probabilities
                                           in self.last_probabilities.items()}}
    if self.checkpointer is not None:  # latest first: `restore_best` rebuilds a missing best
      meta = {"epoch": epoch, "history": self.history,
              "best_test_probabilities": self.best_test}
      self.save_latest(meta)
      if improved:
        self.checkpointer.save_best(epoch, self.weights(), meta)

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
    train_metrics = self.metrics(self.data.split.train, self.best)
    result = fold_result(self.config, self.data, self.history, train_metrics["wa"])
    self.write_predictions(result.selected_epoch, result.best_test_epoch)
    return result


# The pieces of an epoch that do not depend on how the steps run, shared with `training.group`.


def write_predictions(fold_dir, data: FoldData, evaluated, selected_epoch: int, selected: dict,
                      best_test_epoch: int, best_test: dict | None) -> None:
  """`fold_dir/predictions.csv` from the selected epoch's `{split: (predicted, probabilities)}`
  and the kept `{"epoch", split: probabilities}` of the best test epoch (None, or another epoch:
  a run resumed from an older version's checkpoint; then the selected epoch's only).
  `evaluated(indices)`: the utterances evaluation scores. Written by the primary process."""
  groups = [prediction_group(data, evaluated, "selected", selected_epoch, split, *selected[split])
            for split in ("val", "test")]
  if best_test is not None and best_test["epoch"] == best_test_epoch:
    for split in ("val", "test"):
      probabilities = np.asarray(best_test[split], np.float64)
      groups.append(prediction_group(data, evaluated, "best_test", best_test_epoch, split,
                                     probabilities.argmax(axis=-1), probabilities))
  else:
    logging.warning("fold %d: the predictions of epoch %d (best on test) were not kept by the "
                    "version that trained it; %s has the selected epoch's only",
                    data.split.number, best_test_epoch, fold_dir / predictions_lib.FILENAME)
  if parallel.is_primary():
    predictions_lib.write(pathlib.Path(fold_dir) / predictions_lib.FILENAME, groups)


def prediction_group(data: FoldData, evaluated, kind: str, epoch: int, split: str,
                     predicted: np.ndarray, probabilities: np.ndarray
                     ) -> predictions_lib.Predictions:
  indices = evaluated(getattr(data.split, split))
  utterances = [data.manifest[int(i)] for i in indices]
  return predictions_lib.Predictions(
      kind, epoch, split, [u.utt_id for u in utterances], [u.speaker for u in utterances],
      [u.session for u in utterances], data.targets[indices], predicted,
      np.asarray(probabilities, np.float64), tuple(data.classes))


def is_new_best_test(history: list) -> bool:
  """Whether the last epoch of `history` beats every earlier one on test WA (paper-style)."""
  best_so_far = max((r["test"]["wa"] for r in history[:-1]), default=-1.0)
  return history[-1]["test"]["wa"] > best_so_far


def train_record(epoch: int, sums: dict, seconds: float, data_seconds: float) -> dict:
  """An epoch's training entry of the history from its metric sums (host numbers)."""
  return {"epoch": epoch, "train_loss": float(sums["loss_sum"] / sums["count"]),
          "train_running_acc": float(sums["correct"] / sums["count"]),
          "train_seconds": seconds, "data_seconds": data_seconds,
          "utterances_per_s": float(sums["count"]) / seconds}


def evaluated_indices(config, indices: np.ndarray, eval_batch_size: int) -> np.ndarray:
  """The examples of `indices` that evaluation scores (whole batches only with
  `train.drop_last_eval_batch`, as the paper's code)."""
  if config.train.drop_last_eval_batch and len(indices) >= eval_batch_size:
    return indices[:len(indices) // eval_batch_size * eval_batch_size]
  return indices


def is_new_best(history: list, metric: str) -> bool:
  """Whether the last epoch of `history` beats every earlier one on validation `metric`."""
  best_so_far = max((r["val"][metric] for r in history[:-1]), default=-1.0)
  return history[-1]["val"][metric] > best_so_far


def fold_result(config, data: FoldData, history: list, train_accuracy: float
                ) -> results.FoldResult:
  """A fold's result from its history: the epoch chosen on validation, the paper-style best test
  epoch, and `train_accuracy` (of the chosen weights on the training split)."""
  metric = config.train.select_metric
  selected = max(history, key=lambda r: r["val"][metric])
  best_test = max(history, key=lambda r: r["test"]["wa"])
  split = data.split
  return results.FoldResult(
      model=config.model.name, task=config.task, dataset=data.manifest.dataset,
      fold=split.number, test_session=split.test_session, classes=list(data.classes),
      num_train=len(split.train), num_val=len(split.val), num_test=len(split.test),
      selected_epoch=selected["epoch"], val=selected["val"], test=selected["test"],
      train_accuracy=train_accuracy, best_test_epoch=best_test["epoch"],
      best_test_wa=best_test["test"]["wa"], best_test_ua=best_test["test"]["ua"],
      train_utterances_per_s=float(np.median([r["utterances_per_s"] for r in history])),
      history=history)


def select_epoch(history: list[dict], metric: str) -> int | None:
  """The epoch with the best validation `metric` (the first of equals), None without epochs."""
  if not history:
    return None
  return max(history, key=lambda r: r["val"][metric])["epoch"]


def jit_options(train_config) -> dict:
  """`jax.jit` options of the steps: XLA's deterministic GPU kernels with `train.deterministic`
  (CPU kernels are deterministic already; the option is a GPU compiler setting)."""
  if train_config.deterministic and jax.default_backend() == "gpu":
    return {"compiler_options": {"xla_gpu_deterministic_ops": True}}
  return {}


def format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s"
