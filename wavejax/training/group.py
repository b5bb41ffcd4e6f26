"""Several training runs of one fold as one program: a group of learning rates and seeds trained
by one vmapped train step over a stacked train state.

A group is a list of configs that differ only in `train.learning_rate` and `seed` (a Table 1 cell's
rates and seeds for one model, task and fold). Small models are latency-bound at batch 32 on an
accelerator; a group shares one compiled step, one pass over the data and one dispatch per step.

Each member keeps what its own run (`trainer.train_fold`) has:
- its parameters, initialised from its seed (`steps.create_train_state`), and its Adam state;
- its learning rate, held in its optimiser state (`group_steps.member_optimizer`: Adam's scaling,
  then minus the member's rate, with `steps.learning_rate`'s schedule and the front-end multiplier
  of `steps.make_optimizer`), so that one traced step serves every member and a member's update is
  `optax.adam(lr)`'s to the bit for the same gradient;
- its dropout keys (`steps.step_key` of its own key and step) and its data: the split and epoch
  order of its seed (`pipeline.epoch_order(seed, fold, epoch)`). The group loads one batch per
  distinct seed from the decoded clips and each member takes its seed's
  (`group_steps.member_batches`);
- its best-epoch selection, `best` checkpoint, `config.json`, `metrics.jsonl` and `result.json` in
  its own fold folder, as a single run writes them (`wavejax.load_model` reads it as one).

Numbers: a member computes the same functions as its single run, batched by `jax.vmap`. XLA may
fuse and vectorise the batched program differently, so results agree to float32 rounding rather
than to the bit (tests/training/test_group.py measures both).

Checkpoints: the group's latest state (the stacked train state, every member's best weights so far,
their histories) is ONE Orbax checkpoint, `<state_dir>/checkpoints/latest/<step>`, where the
state folder `group_<key>` is named by the members' learning rates and seeds, so a different
group never resumes it. Resume and preemption work as in `loop.FoldTrainer`: after a kill the
rerun continues from the last epoch's checkpoint; SIGTERM/SIGINT save before the next step, with
the position in the epoch and every member's running sums, and the rerun continues that epoch
exactly.

A member whose loss or weights become NaN or infinite fails alone: it is reported and left out
from then on (no best checkpoint, no result) while the others finish; `train_group` then writes
their results and raises `errors.TrainingError` naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from wavejax import config as wavejax_config
from wavejax import errors
from wavejax.data import folds, pipeline
from wavejax.models import create_model
from wavejax.reporting import results
from wavejax.training import (
  augment,
  checkpoint,
  feeding,
  group_steps,
  loop,
  parallel,
  precise_bn,
  preemption,
  steps,
  workspace,
)
from wavejax.training import hooks as hooks_lib
from wavejax.training import trainer as trainer_lib

# The config fields in which the members of a group may differ.
MEMBER_FIELDS = ("train.learning_rate", "seed")

# ------------------------------------------------------------------------------------------------
# Memory


def device_memory_bytes(device=None) -> int | None:
  """The memory of `device` (default: the first): the allocator's limit on GPUs and TPUs, the
  host's physical memory on CPUs; None where neither is known."""
  device = jax.devices()[0] if device is None else device
  try:
    stats = device.memory_stats()
  except (AttributeError, NotImplementedError, RuntimeError):
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  if device.platform == "cpu":
    try:
      return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
      return None
  return None


def member_bytes(config, num_samples: int, num_classes: int, steps_per_epoch: int = 1
                 ) -> int | None:
  """The device memory one member adds to a group train step: the single train step's
  arguments, outputs and temporaries, less the donated arguments its outputs reuse, as XLA
  reports them for the compiled step (`compiled.memory_analysis()`); None where the backend does
  not report them. Nothing is initialised: the state's shapes come from `jax.eval_shape`."""
  config = wavejax_config.resolve(config)
  model = create_model(config.model, num_classes=num_classes)
  state = jax.eval_shape(lambda: steps.create_train_state(model, config, num_samples,
                                                          steps_per_epoch, 1))
  size = config.train.batch_size
  batch = {"waveforms": jax.ShapeDtypeStruct((size, num_samples), jnp.float32),
           "labels": jax.ShapeDtypeStruct((size,), jnp.int32),
           "weights": jax.ShapeDtypeStruct((size,), jnp.float32)}
  step = functools.partial(steps.train_step, double_softmax=config.train.double_softmax)
  try:
    analysis = jax.jit(step, donate_argnums=0).lower(state, batch).compile().memory_analysis()
  except (NotImplementedError, RuntimeError, AttributeError):
    return None
  if analysis is None:
    return None
  used = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          + analysis.temp_size_in_bytes - getattr(analysis, "alias_size_in_bytes", 0))
  return max(int(used), 1)


def members_that_fit(config, num_samples: int, num_classes: int, share: float = 0.8
                     ) -> int | None:
  """How many members of `config`'s group fit in `share` of the device's memory (at least 1);
  None when either the step's or the device's memory is unknown (then the whole group is
  tried)."""
  per_member, available = member_bytes(config, num_samples, num_classes), device_memory_bytes()
  if per_member is None or available is None:
    return None
  return max(1, int(share * available) // per_member)


# ------------------------------------------------------------------------------------------------
# The epoch loop of a group


class MemberView:
  """One member as a monitor (`hooks.Hook`) sees a `loop.FoldTrainer`: model, state, resume."""

  def __init__(self, group: GroupTrainer, index: int):
    self.group, self.index = group, index

  @property
  def model(self):
    return self.group.model

  @property
  def fold(self) -> int:
    return self.group.fold

  @property
  def resume(self) -> loop.ResumePoint:
    return self.group.resume

  @property
  def state(self) -> steps.TrainState:
    return group_steps.member_slice(self.group.state, self.index)


def describe_member(config) -> str:
  return f"lr={config.train.learning_rate:g} seed={config.seed}"


class GroupTrainer:
  """Trains one fold of a group: `GroupTrainer(configs, data, fold_dirs, state_dir).run()` ->
  one `FoldResult` per member (None for a member that diverged, see `failed`).

  `data[m]` is member m's `loop.FoldData` (one dataset; the split of its seed); `fold_dirs[m]` its
  fold folder (None: nothing written); `state_dir` the folder of the group's latest checkpoint.
  `resume.history` holds one history per member.
  """

  def __init__(self, configs: Sequence, data: Sequence[loop.FoldData],
               fold_dirs: Sequence[pathlib.Path | None], state_dir: pathlib.Path | None,
               hooks=None):
    self.configs, self.data, self.fold_dirs = list(configs), list(data), list(fold_dirs)
    self.config = self.configs[0]  # every field but the members' own is the same
    self.state_dir = state_dir
    self.fold = data[0].split.number
    seeds = [config.seed for config in self.configs]
    self.slot_seeds = list(dict.fromkeys(seeds))  # one batch per distinct seed
    self.slots = tuple(self.slot_seeds.index(seed) for seed in seeds)
    self.slot_data = [self.data[seeds.index(seed)] for seed in self.slot_seeds]
    if len({len(d.split.train) for d in self.slot_data}) > 1:
      raise errors.ConfigError(f"fold {self.fold}: the seeds' training splits differ in size; "
                               "train these seeds separately")
    self.mesh = parallel.data_mesh()
    train_cfg = self.config.train
    self.batch_size = parallel.check_batch_size(train_cfg.batch_size, self.mesh,
                                                "config.train.batch_size")
    self.eval_batch_size = parallel.check_batch_size(train_cfg.eval_batch_size, self.mesh,
                                                     "config.train.eval_batch_size")
    self.steps_per_epoch = -(-len(self.slot_data[0].split.train) // self.batch_size)
    self.num_classes = len(data[0].classes)
    self.model = create_model(self.config.model, num_classes=self.num_classes)
    replicated, sharded = parallel.replicated(self.mesh), group_steps.group_sharding(self.mesh)
    state = group_steps.create_group_state(self.model, self.configs, data[0].waveforms.shape[1],
                                           self.steps_per_epoch, self.fold)
    self.state = jax.device_put(state, replicated)
    augmentation = augment.settings_from_config(train_cfg.augment, self.num_classes,
                                                self.config.data.sample_rate)
    options = loop.jit_options(train_cfg)
    self.train_step = group_steps.jit_train_step(self.mesh, self.slots,
                                                 train_cfg.double_softmax, augmentation, options)
    shardings = dict(in_shardings=(replicated, sharded), out_shardings=replicated, **options)
    self.eval_step = jax.jit(
        functools.partial(group_steps.group_eval_step, slots=self.slots), **shardings)
    self.batch_moments = jax.jit(
        functools.partial(group_steps.group_batch_moments, slots=self.slots), **shardings)
    self.all_finite = jax.jit(jax.vmap(steps.all_finite), in_shardings=replicated,
                              out_shardings=replicated)
    self.select = jax.jit(group_steps.select_members, out_shardings=replicated)
    checkpoints = train_cfg.checkpoint and state_dir is not None
    self.checkpointer = (checkpoint.Checkpointer(state_dir / "checkpoints", cleanup=True,
                                                 kinds=("latest",)) if checkpoints else None)
    self.best_checkpointers = [
        checkpoint.Checkpointer(fold_dir / "checkpoints", cleanup=True, kinds=("best",))
        if checkpoints and fold_dir is not None else None for fold_dir in self.fold_dirs]
    self.stop = preemption.StopSignals(enabled=False)
    self.hooks = ([hooks_lib.default_hooks(c, d) for c, d in zip(self.configs, self.fold_dirs)]
                  if hooks is None else [list(h) for h in hooks])
    self.resume = loop.ResumePoint(history=[[] for _ in self.configs])
    self.best = jax.tree.map(jnp.copy, self.weights())  # every member's best weights so far
    # Per member, `{"epoch", "val", "test"}`: the probabilities of its best epoch on test.
    self.best_test: list[dict | None] = [None] * len(self.configs)
    self.last_probabilities = {}  # split -> each member's `[N, C]` of the latest evaluation
    self.failed: dict[int, str] = {}  # member -> why it stopped

  @property
  def history(self) -> list[list[dict]]:
    return self.resume.history

  @property
  def num_members(self) -> int:
    return len(self.configs)

  def alive(self) -> list[int]:
    return [m for m in range(self.num_members) if m not in self.failed]

  def run(self) -> list[results.FoldResult | None]:
    """Trains the remaining epochs; with checkpoints, SIGTERM and SIGINT save the group and raise
    `errors.Preempted` while it runs (see `preemption`)."""
    try:
      self.stop = preemption.StopSignals(enabled=self.checkpointer is not None)
      with self.stop:
        return self.train()
    finally:
      for saver in [self.checkpointer, *self.best_checkpointers]:
        if saver is not None:
          saver.close()
      for hook in (h for member_hooks in self.hooks for h in member_hooks):
        hook.close()

  def train(self) -> list[results.FoldResult | None]:
    self.restore()
    for m in self.alive():
      for hook in self.hooks[m]:
        hook.start(MemberView(self, m), self.resume.epoch)
    epoch_times = []
    for epoch in range(self.resume.epoch + 1, self.config.train.num_epochs + 1):
      began = time.perf_counter()
      records = self.train_epoch(epoch)
      evaluations = self.evaluate_epoch()
      for m in self.alive():
        records[m].update(evaluations[m])
        for hook in self.hooks[m]:  # before the checkpoint, as in the single loop
          hook.epoch_end(MemberView(self, m), epoch, records[m])
      epoch_times.append(time.perf_counter() - began)
      for m in self.alive():
        self.history[m].append(records[m])
      self.after_epoch(epoch)
      self.log_epoch(epoch, records, epoch_times)
    return self.fold_results()

  def step(self) -> int:
    """The optimiser step, the same for every member."""
    return int(jax.device_get(self.state.step)[0])

  def restore(self) -> int:
    """Loads the group's latest checkpoint, if any; returns the last finished epoch."""
    if self.checkpointer is None:
      return 0
    restored = self.checkpointer.restore_latest({"state": self.state, "best": self.best})
    if restored is None:
      return 0
    item, meta = restored
    self.state, self.best = item["state"], item["best"]
    self.best_test = meta.get("best_test_probabilities") or [None] * self.num_members
    self.failed = {int(m): message for m, message in meta.get("failed", {}).items()}
    self.resume = loop.ResumePoint(epoch=int(meta["epoch"]), history=meta["history"],
                                   partial=meta.get("partial"), saved_step=self.step())
    where = self.state_dir / "checkpoints"
    if self.resume.partial is None:
      logging.info("fold %d (a group of %d runs): resumed after epoch %d from %s", self.fold,
                   self.num_members, self.resume.epoch, where)
    else:
      logging.info("fold %d (a group of %d runs): resumed in epoch %d at step %d/%d from %s",
                   self.fold, self.num_members, self.resume.epoch + 1,
                   self.resume.partial["step_in_epoch"], self.steps_per_epoch, where)
    return self.resume.epoch

  def batches(self, orders: Sequence[np.ndarray], batch_size: int, first_batch: int = 0):
    """`[S, B, ...]` batches of the slots' `orders` (equal lengths) on the mesh."""
    rows = parallel.local_rows(self.mesh, batch_size)
    data = self.slot_data[0]
    streams = [pipeline.batches(data.waveforms, data.targets, order, batch_size,
                                first_batch=first_batch, rows=rows) for order in orders]
    for per_slot in zip(*streams):
      batch = {name: np.stack([b[name] for b in per_slot]) for name in per_slot[0]}
      yield group_steps.put_group_batch(batch, self.mesh)

  def train_epoch(self, epoch: int) -> list[dict]:
    """One epoch (the rest of it after a mid-epoch resume); each member's training record."""
    train_cfg = self.config.train
    orders = [pipeline.epoch_order(data.split.train, data.targets, seed=seed, fold=self.fold,
                                   epoch=epoch if train_cfg.reshuffle else 1,
                                   balanced=train_cfg.balanced_sampling)
              for data, seed in zip(self.slot_data, self.slot_seeds)]
    first, sums, seconds = self.take_partial_epoch()
    began = time.perf_counter()
    loader = feeding.Timed(feeding.prefetch(self.batches(orders, self.batch_size, first)))
    for step, batch in enumerate(loader, first):
      if self.stop.requested():
        self.preempt(epoch, step, sums, seconds + time.perf_counter() - began)
      self.state, metrics = self.train_step(self.state, batch)
      sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
      if (step + 1) % loop.FINITE_CHECK_EVERY == 0:
        self.check_finite(epoch, step + 1, sums)
      for hook in self.hooks[0]:  # one member's step hooks: one profiler trace for the group
        hook.step_end(MemberView(self, 0), epoch, step)
    sums = jax.block_until_ready(sums)  # the last dispatched step, as in the single loop
    seconds += time.perf_counter() - began
    self.check_finite(epoch, self.steps_per_epoch, sums, weights=True)
    sums = jax.device_get(sums)
    return [loop.train_record(epoch, {name: values[m] for name, values in sums.items()}, seconds,
                              loader.seconds) for m in range(self.num_members)]

  def take_partial_epoch(self) -> tuple[int, dict | None, float]:
    """(first batch, every member's running sums, seconds) where a mid-epoch checkpoint left the
    epoch, else (0, None, 0). Consumes `resume.partial`."""
    partial, self.resume.partial = self.resume.partial, None
    if partial is None:
      return 0, None, 0.0
    sums = {name: np.asarray(values, np.float32) for name, values in partial["sums"].items()}
    return int(partial["step_in_epoch"]), sums, float(partial["seconds"])

  def check_finite(self, epoch: int, step: int, sums, weights: bool = False) -> None:
    """Fails each member whose running loss (or, with weights=True, a weight) is NaN or
    infinite; raises `errors.TrainingError`, saving nothing, when no member is left."""
    sums = jax.device_get(sums)
    losses = sums["loss_sum"] / np.maximum(sums["count"], 1.0)
    finite = np.asarray(self.all_finite(self.weights())) if weights else None
    for m in self.alive():
      problem = None if np.isfinite(losses[m]) else f"the training loss is {float(losses[m])}"
      if problem is None and weights and not finite[m]:
        problem = "a weight is NaN or infinite"
      if problem is not None:
        self.failed[m] = (f"{describe_member(self.configs[m])}: fold {self.fold} epoch {epoch} "
                          f"step {step}/{self.steps_per_epoch}: {problem}; lower "
                          "config.train.learning_rate")
        logging.error("%s (the group's other runs go on)", self.failed[m])
    if not self.alive():
      raise errors.TrainingError(self.failure_message() + " (the last good checkpoint is kept)")

  def failure_message(self) -> str:
    return (f"{len(self.failed)} of the group's {self.num_members} runs diverged: "
            + "; ".join(self.failed[m] for m in sorted(self.failed)))

  def preempt(self, epoch: int, step: int, sums, seconds: float) -> None:
    """Saves the group before `step` of `epoch` (with the members' running sums) and raises
    `errors.Preempted`."""
    resumes = f"epoch {epoch} step {step}"
    if self.step() not in (0, self.resume.saved_step):
      if not all(hook.resumable_mid_epoch for hooks in self.hooks for hook in hooks):
        resumes = (f"the start of epoch {epoch}: config.train.track_change_rate saves no "
                   "mid-epoch state")
      else:
        self.check_finite(epoch, step, sums, weights=True)
        partial = {"step_in_epoch": step, "seconds": seconds,
                   "sums": {name: [float(v) for v in values]
                            for name, values in jax.device_get(sums).items()}}
        self.save_latest({"epoch": epoch - 1, "history": self.history, "partial": partial,
                          "best_test_probabilities": self.best_test})
    raise errors.Preempted(
        f"preempted by {self.stop.signal_name} at fold {self.fold} epoch {epoch} step "
        f"{step}/{self.steps_per_epoch} (a group of {self.num_members} runs); rerun the same "
        f"command to resume (from {resumes})", self.stop.signum)

  def save_latest(self, meta: dict) -> None:
    step = self.step()
    meta = {**meta, "failed": {str(m): message for m, message in self.failed.items()},
            "members": [describe_member(c) for c in self.configs]}
    self.checkpointer.save_latest(step, {"state": self.state, "best": self.best}, meta)
    self.resume.saved_step = step

  def weights(self) -> dict:
    return {"params": self.state.params, "batch_stats": self.state.batch_stats}

  def predict(self, slot_indices: Sequence[np.ndarray], weights=None
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each member's (predicted classes, `[N, C]` probabilities) of its slot's indices."""
    state = self.state if weights is None else self.state.replace(**weights)
    lengths = [len(indices) for indices in slot_indices]
    count = max(lengths)
    padded = [np.resize(indices, count) if len(indices) else np.zeros(count, int)
              for indices in slot_indices]  # evaluated together; the extra rows are dropped
    outputs = [jax.device_get(self.eval_step(state, batch)) for batch in self.eval_batches(padded)]
    predicted = (np.concatenate([p for p, _ in outputs], axis=1) if outputs
                 else np.zeros((self.num_members, 0), np.int32))
    probabilities = (np.concatenate([q for _, q in outputs], axis=1) if outputs
                     else np.zeros((self.num_members, 0, self.num_classes), np.float32))
    return [(predicted[m, :lengths[slot]], probabilities[m, :lengths[slot]])
            for m, slot in enumerate(self.slots)]

  def evaluated(self, indices: np.ndarray) -> np.ndarray:
    return loop.evaluated_indices(self.config, indices, self.eval_batch_size)

  def eval_batches(self, slot_indices: Sequence[np.ndarray]):
    """As `loop.FoldTrainer.eval_batches`, for every slot at once."""
    sizes = pipeline.evaluation_batch_sizes(len(slot_indices[0]), self.eval_batch_size,
                                            self.mesh.devices.size)
    start = 0
    for size in sizes:
      yield from self.batches([indices[start:start + size] for indices in slot_indices], size)
      start += size

  def metrics(self, slot_indices: Sequence[np.ndarray], weights=None,
              split: str | None = None) -> list[dict]:
    """Each member's metrics; with `split`, its probabilities go to `last_probabilities`."""
    slot_indices = [self.evaluated(indices) for indices in slot_indices]
    outputs = self.predict(slot_indices, weights)
    if split is not None:
      self.last_probabilities[split] = [probabilities for _, probabilities in outputs]
    targets = self.slot_data[0].targets
    return [results.classification_metrics(targets[slot_indices[slot]], outputs[m][0],
                                           self.num_classes)
            for m, slot in enumerate(self.slots)]

  def evaluate_epoch(self) -> list[dict]:
    self.recalibrate_batch_norm()
    val = self.metrics([data.split.val for data in self.slot_data], split="val")
    test = self.metrics([data.split.test for data in self.slot_data], split="test")
    return [{"val": v, "test": t} for v, t in zip(val, test)]

  def recalibrate_batch_norm(self) -> None:
    """`loop.FoldTrainer.recalibrate_batch_norm` for every member (each on its seed's shuffle)."""
    num_batches = int(self.config.train.precise_bn_batches)
    if num_batches <= 0 or not self.state.batch_stats:
      return
    orders = []
    for data, seed in zip(self.slot_data, self.slot_seeds):
      order = pipeline.epoch_order(data.split.train, data.targets, seed=seed, fold=self.fold,
                                   epoch=0, balanced=False)
      full = max(1, len(order) // self.batch_size) * self.batch_size
      orders.append(order[:min(full, num_batches * self.batch_size)])
    per_batch = [self.batch_moments(self.state, batch["waveforms"])
                 for batch in self.batches(orders, self.batch_size)]
    statistics = precise_bn.population_statistics(per_batch)  # pools over batches, per member
    statistics = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), statistics,
                              jax.device_get(self.state.batch_stats))
    self.state = self.state.replace(
        batch_stats=jax.device_put(statistics, parallel.replicated(self.mesh)))

  def after_epoch(self, epoch: int) -> None:
    """Keeps each improved member's weights as its best (and saves them in its fold folder), then
    checkpoints the group."""
    metric = self.config.train.select_metric
    improved = [m in self.alive() and loop.is_new_best(self.history[m], metric)
                for m in range(self.num_members)]
    if any(improved):
      self.best = self.select(np.asarray(improved), self.weights(), self.best)
    for m in self.alive():
      if loop.is_new_best_test(self.history[m]):
        self.best_test[m] = {"epoch": epoch, **{split: probabilities[m].tolist() for split,
                                                probabilities in self.last_probabilities.items()}}
    for m in np.flatnonzero(improved):
      saver = self.best_checkpointers[m]
      if saver is not None:
        saver.save_best(epoch, group_steps.member_slice(self.best, m),
                        {"epoch": epoch, "history": self.history[m]})
    if self.checkpointer is not None:
      self.save_latest({"epoch": epoch, "history": self.history,
                        "best_test_probabilities": self.best_test})

  def log_epoch(self, epoch: int, records: list[dict], epoch_times: list[float]) -> None:
    remaining = (self.config.train.num_epochs - epoch) * float(np.mean(epoch_times))
    for m in self.alive():
      record = records[m]
      logging.info(
          "fold %d epoch %d/%d %s: loss %.4f acc %.3f | val WA %.3f UA %.3f | test WA %.3f "
          "UA %.3f", self.fold, epoch, self.config.train.num_epochs,
          describe_member(self.configs[m]), record["train_loss"], record["train_running_acc"],
          record["val"]["wa"], record["val"]["ua"], record["test"]["wa"], record["test"]["ua"])
    first = records[0]
    logging.info("fold %d epoch %d/%d (a group of %d runs): %.1f utt/s per run, data %.0f%% | "
                 "ETA %s", self.fold, epoch, self.config.train.num_epochs, self.num_members,
                 first["utterances_per_s"], 100 * first["data_seconds"] / first["train_seconds"],
                 loop.format_seconds(remaining))

  def fold_results(self) -> list[results.FoldResult | None]:
    """Each member's `FoldResult` (None for a member that failed)."""
    train = self.metrics([data.split.train for data in self.slot_data], self.best)
    selected = {split: self.predict([self.evaluated(getattr(data.split, split))
                                     for data in self.slot_data], self.best)
                for split in ("val", "test")}
    fold_results = []
    for m in range(self.num_members):
      if m in self.failed:
        fold_results.append(None)
        continue
      result = loop.fold_result(self.configs[m], self.data[m], self.history[m], train[m]["wa"])
      if self.fold_dirs[m] is not None:
        loop.write_predictions(self.fold_dirs[m], self.data[m], self.evaluated,
                               result.selected_epoch, {s: selected[s][m] for s in selected},
                               result.best_test_epoch, self.best_test[m])
      fold_results.append(result)
    return fold_results


# ------------------------------------------------------------------------------------------------
# Entry point


def check_group(configs: Sequence) -> None:
  """Refuses configs that differ in anything but `MEMBER_FIELDS`, and the same run twice."""
  reference = workspace.config_json(configs[0])
  runs = {}
  for m, config in enumerate(configs):
    changed = sorted(set(workspace.differences(reference, workspace.config_json(config)))
                     - set(MEMBER_FIELDS))
    if changed:
      raise errors.ConfigError(
          f"config {m} of the group differs from config 0 in {changed[0]}"
          f"{f' (and {len(changed) - 1} more)' if len(changed) > 1 else ''}; the configs of a "
          f"group may differ only in {' and '.join(MEMBER_FIELDS)}")
    run = (config.train.learning_rate, config.seed)
    if run in runs:
      raise errors.ConfigError(
          f"configs {runs[run]} and {m} of the group are the same run ({describe_member(config)}); "
          "give each its own learning rate or seed")
    runs[run] = m
  if configs[0].train.augment.noise_dir is not None:
    raise errors.ConfigError("config.train.augment.noise_dir: a group's step does not take noise "
                             "recordings; train these configs one by one (table1 --nogroup)")


def group_key(configs: Sequence) -> str:
  """A short name for the members (their learning rates and seeds, in order)."""
  members = [[repr(float(c.train.learning_rate)), int(c.seed)] for c in configs]
  return hashlib.sha1(json.dumps(members).encode()).hexdigest()[:10]


def state_dir_of(configs: Sequence, root: pathlib.Path) -> pathlib.Path:
  """The folder of the group's latest checkpoint under `root`: `group_<key>`."""
  return pathlib.Path(root) / f"group_{group_key(configs)}"


def load_group_data(configs: Sequence, fold: int) -> list[loop.FoldData]:
  """Each member's `FoldData`: the dataset loaded once, the split of each member's seed."""
  first = trainer_lib.load_fold_data(configs[0], fold)
  splits = {configs[0].seed: first}
  for config in configs[1:]:
    if config.seed not in splits:
      split = trainer_lib.fold_split(config, first.manifest, first.targets, fold)
      splits[config.seed] = dataclasses.replace(first, split=split)
  return [splits[config.seed] for config in configs]


def train_group(configs: Sequence[ml_collections.ConfigDict], fold: int | None = None,
                workdirs: Sequence | None = None, group_dir=None) -> list[results.FoldResult]:
  """Trains one fold of several configs that differ only in `train.learning_rate` and `seed`, as
  one vmapped step; returns each config's `FoldResult`, as `train_fold` would.

  Args:
    configs: the members' configs.
    fold: 1-based fold; defaults to the first config's `fold`.
    workdirs: one workdir per config, each as `train_fold`'s (its `fold_<k>/` gets that member's
      config, best checkpoint, metrics and result). Members whose result exists are read back, not
      trained. None: nothing is written.
    group_dir: the folder under which the group's latest checkpoint goes (in `group_<key>`, named
      by the members' learning rates and seeds); default: the first member's fold folder.

  Raises:
    errors.ConfigError: configs that differ in another field (named), or the same run twice.
    errors.TrainingError: a member's loss or weights became NaN or infinite; the others'
      results are written first.
    errors.Preempted: on SIGTERM / SIGINT, after saving the group's checkpoint.
  """
  configs = [wavejax_config.resolve(config) for config in configs]
  if not configs:
    raise errors.ConfigError("train_group: no configs given")
  for config in configs:
    wavejax_config.check_values(config)
  check_group(configs)
  fold = configs[0].fold if fold is None else fold
  if fold is None:
    raise errors.ConfigError("no fold given: set config.fold or pass fold=")
  if workdirs is not None and len(workdirs) != len(configs):
    raise errors.ConfigError(f"train_group: {len(workdirs)} workdirs for {len(configs)} configs; "
                             "pass one workdir per config")
  fold_dirs = ([pathlib.Path(w) / f"fold_{fold}" for w in workdirs] if workdirs is not None
               else [None] * len(configs))
  if workdirs is not None and len({d.resolve() for d in fold_dirs}) < len(fold_dirs):
    raise errors.ConfigError("train_group: two configs share a workdir; pass one per config")
  with contextlib.ExitStack() as held:  # each member's fold is this process's, as in train_fold
    for fold_dir in fold_dirs if workdirs is not None else ():
      held.enter_context(workspace.owned(fold_dir,
                                         others=[fold_dir.parent / workspace.LOCK_FILE]))
    return _train_group_owned(configs, fold, fold_dirs, group_dir)


def _train_group_owned(configs, fold: int, fold_dirs, group_dir) -> list[results.FoldResult]:
  finished = {}
  for m, (config, fold_dir) in enumerate(zip(configs, fold_dirs)):
    if fold_dir is not None:
      workspace.check_config(config, fold_dir)
      if (fold_dir / "result.json").exists():
        logging.info("fold %d %s: already complete, reading %s", fold, describe_member(config),
                     fold_dir / "result.json")
        finished[m] = results.load_fold(fold_dir / "result.json")
  pending = [m for m in range(len(configs)) if m not in finished]
  if pending:
    trained = _train_members([configs[m] for m in pending], fold,
                             [fold_dirs[m] for m in pending], group_dir)
    finished.update(zip(pending, trained))
  return [finished[m] for m in range(len(configs))]


def _train_members(configs, fold: int, fold_dirs, group_dir) -> list[results.FoldResult]:
  data = load_group_data(configs, fold)
  writes = fold_dirs[0] is not None
  state_dir = None
  if writes:
    state_dir = state_dir_of(configs, fold_dirs[0] if group_dir is None else group_dir)
  trainer = GroupTrainer(configs, data, fold_dirs, state_dir)
  # As train_fold: only configs that got this far are recorded.
  if writes and parallel.is_primary():
    for config, member_data, fold_dir in zip(configs, data, fold_dirs):
      workspace.record_config(config, fold_dir)
      folds.write_assignment(member_data.manifest, fold_dir.parent / "folds.json",
                             classes=member_data.classes)
    results.write_json(state_dir / "group.json", {
        "fold": fold, "members": [{"learning_rate": c.train.learning_rate, "seed": c.seed,
                                   "fold_dir": str(d)} for c, d in zip(configs, fold_dirs)]})
  outcome = trainer.run()
  if writes and parallel.is_primary():
    for result, fold_dir in zip(outcome, fold_dirs):
      if result is not None:
        results.save_fold(result, fold_dir / "result.json")
  if trainer.failed:
    raise errors.TrainingError(trainer.failure_message())
  return outcome
