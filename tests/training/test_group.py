"""Grouped training: a member of a group trains as its own run would (the optimiser to the bit, the
steps to float32 rounding, a short run within a measured bound), writes the same files, resumes
after SIGTERM and after SIGKILL to the numbers of an unbroken group, and fails alone when it
diverges."""

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wavejax
from helpers import REPO, hold_lock, tiny_config
from wavejax import config as wavejax_config
from wavejax import errors, runtime, training
from wavejax.data import pipeline
from wavejax.models import create_model
from wavejax.reporting import predictions
from wavejax.training import group, group_steps, loop, steps, workspace

# (learning rate, seed): two rates sharing seed 0's data, and a second seed.
MEMBERS = [(1e-3, 0), (3e-3, 0), (1e-3, 1)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", autouse=True)
def compilation_cache():
  runtime.enable_compilation_cache()


def member_configs(cache_dir, members=MEMBERS, **overrides):
  return [wavejax_config.resolve(tiny_config(
      cache_dir, **{"train.learning_rate": lr, "seed": seed, **overrides}))
      for lr, seed in members]


def metrics_of(history):
  return [{k: r[k] for k in ("epoch", "train_loss", "train_running_acc", "val", "test")}
          for r in history]


def without_timings(result):
  timings = ("train_seconds", "data_seconds", "utterances_per_s")
  history = [{k: v for k, v in r.items() if k not in timings} for r in result.history]
  return dataclasses.replace(result, history=history, train_utterances_per_s=0.0)


def checkpoint_steps(directory):
  return sorted(int(p.name) for p in directory.glob("*") if p.name.isdigit())


# ------------------------------------------------------------------------------------------------
# The optimiser and the step


@pytest.mark.parametrize("fields", [
    {}, {"lr_schedule": "exponential"}, {"frontend_lr_multiplier": 0.3},
    {"lr_schedule": "exponential", "frontend_lr_multiplier": 7.0}])
def test_member_updates_equal_adam_bit_for_bit(fields):
  """A member's updates, its rate read from its optimiser state, equal `steps.make_optimizer`'s
  Adam with that rate to the last bit: alone, and vmapped over members with different rates
  (against Adam vmapped the same way). Vmapped and unbatched Adam themselves differ by a few ulp
  (XLA fuses the batched update differently)."""
  rng = np.random.default_rng(0)
  params = {"frontend": {"kernel": rng.normal(size=(5, 3)).astype(np.float32)},
            "head": {"w": rng.normal(size=(4,)).astype(np.float32)}}
  rates, steps_per_epoch = (1e-4, 3e-3, 0.01), 2

  def train_config(rate):
    config = tiny_config("unused").train
    config.learning_rate, config.num_epochs = rate, 3
    config.update(fields)
    return config

  members = [group_steps.member_optimizer(train_config(r), steps_per_epoch, r) for r in rates]
  adams = [steps.make_optimizer(train_config(r), steps_per_epoch) for r in rates]
  group_update = jax.jit(jax.vmap(members[0].update))  # the rate comes from the state
  group_state = group_steps.stack([tx.init(params) for tx in members])
  own_states = [tx.init(params) for tx in members]
  adam_states = [tx.init(params) for tx in adams]
  vmapped_adam_states = [group_steps.stack([tx.init(params)] * len(rates)) for tx in adams]
  stacked_params = group_steps.stack([params] * len(rates))
  for _ in range(5):
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32) * 1e-3, params)
             for _ in rates]
    updates, group_state = group_update(group_steps.stack(grads), group_state, stacked_params)
    for m, adam in enumerate(adams):
      own, own_states[m] = jax.jit(members[m].update)(grads[m], own_states[m], params)
      expected, adam_states[m] = jax.jit(adam.update)(grads[m], adam_states[m], params)
      vmapped, vmapped_adam_states[m] = jax.jit(jax.vmap(adam.update))(
          group_steps.stack(grads), vmapped_adam_states[m], stacked_params)
      for got, alone, want, batched in zip(
          jax.tree.leaves(group_steps.member_slice(updates, m)), jax.tree.leaves(own),
          jax.tree.leaves(expected), jax.tree.leaves(group_steps.member_slice(vmapped, m))):
        np.testing.assert_array_equal(alone, want)
        np.testing.assert_array_equal(got, batched)
        np.testing.assert_array_max_ulp(got, want, maxulp=4)
        assert np.abs(want).max() > 0


def single_state_of(member: steps.TrainState, template: steps.TrainState) -> steps.TrainState:
  """A group member's state laid out as its own run's `template` (Adam's moments, no rate)."""
  return template.replace(step=member.step, params=member.params, batch_stats=member.batch_stats,
                          key=member.key, opt_state=(member.opt_state[0], optax.EmptyState()))


def test_group_steps_match_single_steps(cache_dir):
  """From the same state, a member's group step gives its own step's loss and gradient to float32
  rounding: the first three steps, with dropout on (each member its own keys) and each seed
  its own data order. Initial parameters are the single run's exactly."""
  configs = member_configs(cache_dir, **{"model.head.dropout": 0.5})
  data = group.load_group_data(configs, 1)
  trainer = group.GroupTrainer(configs, data, [None] * 3, None)
  assert trainer.slots == (0, 0, 1)
  model, spe = trainer.model, trainer.steps_per_epoch
  templates = []
  for m, config in enumerate(configs):
    own = steps.create_train_state(model, config, data[m].waveforms.shape[1], spe, fold=1)
    for got, want in zip(jax.tree.leaves(group_steps.member_slice(trainer.state.params, m)),
                         jax.tree.leaves(own.params)):
      np.testing.assert_array_equal(got, want)
    templates.append(own)
  single_step = jax.jit(steps.train_step)
  orders = [pipeline.epoch_order(d.split.train, d.targets, seed=seed, fold=1, epoch=1)
            for d, seed in zip(trainer.slot_data, trainer.slot_seeds)]
  own_batches = [list(pipeline.batches(d.waveforms, d.targets, orders[trainer.slots[m]], 8))
                 for m, d in enumerate(data)]
  for k, batch in enumerate(itertools.islice(trainer.batches(orders, 8), 3)):
    before = trainer.state
    trainer.state, metrics = trainer.train_step(jax.tree.map(jnp.copy, before), batch)
    for m in range(len(configs)):
      single = single_state_of(group_steps.member_slice(before, m), templates[m])
      after, own_metrics = single_step(single, own_batches[m][k])
      np.testing.assert_allclose(metrics["loss_sum"][m], own_metrics["loss_sum"], rtol=1e-5)
      assert metrics["correct"][m] == own_metrics["correct"]
      # Adam's new first moment is 0.9 x the old one (equal here) + 0.1 x the gradient.
      gradient = np.concatenate([np.ravel(x) for x in jax.tree.leaves(after.opt_state[0].mu)])
      group_gradient = np.concatenate([np.ravel(x[m]) for x in
                                       jax.tree.leaves(trainer.state.opt_state[0].mu)])
      scale = np.abs(gradient).max()
      assert scale > 0
      np.testing.assert_allclose(group_gradient, gradient, rtol=1e-4, atol=1e-5 * scale)
      assert int(trainer.state.step[m]) == int(after.step) == k + 1


# ------------------------------------------------------------------------------------------------
# Whole runs


@pytest.fixture(scope="module")
def grouped_run(cache_dir, tmp_path_factory):
  """The members trained as one group with workdirs: (configs, workdirs, results)."""
  configs = member_configs(cache_dir)
  root = tmp_path_factory.mktemp("group")
  workdirs = [root / f"lr{lr:g}" / f"seed{seed}" for lr, seed in MEMBERS]
  return configs, workdirs, wavejax.train_group(configs, 1, workdirs)


def test_a_group_ends_like_its_single_runs(cache_dir, grouped_run):
  """A short grouped run (2 epochs of 6 steps) ends within the bound measured between grouped and
  single runs: the vmapped step rounds differently from the single one (batch norm's batched
  reductions, about 1e-7 of the loss), and Adam amplifies the difference as training goes on.
  Measured over 3 folds x 4 members x 3 epochs: training loss within 0.74% after epoch 1 and 3.8%
  after epochs 2-3, validation and test accuracy within 1 and 2 utterances. Bounds: 2%, 8%, 2."""
  configs, _, grouped = grouped_run
  for config, result in zip(configs, grouped):
    single = training.train_fold(config, 1)
    assert set(result.to_json()) == set(single.to_json())
    assert (result.fold, result.classes, result.num_train, result.num_val, result.num_test) == (
        single.fold, single.classes, single.num_train, single.num_val, single.num_test)
    assert [r["epoch"] for r in result.history] == [1, 2]
    for got, want in zip(result.history, single.history):
      assert set(got) == set(want)
      bound = 0.02 if got["epoch"] == 1 else 0.08
      assert abs(got["train_loss"] - want["train_loss"]) <= bound * want["train_loss"]
      for split, count in (("val", single.num_val), ("test", single.num_test)):
        assert abs(got[split]["wa"] - want[split]["wa"]) * count <= 2 + 1e-9


def test_a_group_writes_what_single_runs_write(grouped_run):
  """Each member's fold folder holds its config, folds, metrics, best checkpoint and result as a
  single run's does; `load_model` loads it; a rerun reads the results back."""
  configs, workdirs, grouped = grouped_run
  for config, workdir, result in zip(configs, workdirs, grouped):
    fold_dir = workdir / "fold_1"
    assert json.loads((fold_dir / "config.json").read_text()) == workspace.config_json(config)
    assert (workdir / "folds.json").exists()
    assert len((fold_dir / "metrics.jsonl").read_text().splitlines()) == 2
    stored = json.loads((fold_dir / "result.json").read_text())
    assert stored == json.loads(json.dumps(result.to_json()))
    assert checkpoint_steps(fold_dir / "checkpoints" / "best") == [result.selected_epoch]
    assert not (fold_dir / "checkpoints" / "latest").exists()
    loaded = wavejax.load_model(workdir, 1)
    assert loaded.epoch == result.selected_epoch and loaded.classes == tuple(result.classes)
    groups = predictions.read(fold_dir / predictions.FILENAME)
    assert len(groups) == 4
    selected, best = groups["selected", "test"], groups["best_test", "test"]
    assert (selected.epoch, best.epoch) == (result.selected_epoch, result.best_test_epoch)
    assert np.mean(selected.labels == selected.predicted) == pytest.approx(result.test["wa"])
    assert np.mean(best.labels == best.predicted) == pytest.approx(result.best_test_wa)
  state_dirs = list((workdirs[0] / "fold_1").glob("group_*"))
  assert len(state_dirs) == 1
  assert checkpoint_steps(state_dirs[0] / "checkpoints" / "latest") == [12]
  assert [m["seed"] for m in json.loads((state_dirs[0] / "group.json").read_text())[
      "members"]] == [seed for _, seed in MEMBERS]
  began = time.perf_counter()
  assert wavejax.train_group(configs, 1, workdirs) == grouped
  assert time.perf_counter() - began < 10  # read back, not trained


def test_a_group_differing_in_another_field_is_refused(cache_dir, tmp_path):
  configs = member_configs(cache_dir)
  configs[2].model.head.dropout = 0.25
  with pytest.raises(errors.ConfigError, match=r"config 2 of the group differs from config 0 in "
                     r"model.head.dropout; the configs of a group may differ only in "
                     r"train.learning_rate and seed"):
    group.train_group(configs, 1, [tmp_path / str(i) for i in range(3)])
  configs = member_configs(cache_dir, members=[(1e-3, 0), (1e-3, 0)])
  with pytest.raises(errors.ConfigError, match=r"configs 0 and 1 of the group are the same run "
                     r"\(lr=0.001 seed=0\)"):
    group.train_group(configs, 1)
  with pytest.raises(errors.ConfigError, match="2 workdirs for 3 configs"):
    group.train_group(member_configs(cache_dir), 1, [tmp_path / "a", tmp_path / "b"])
  assert not list(tmp_path.iterdir())


def test_a_member_fold_held_by_another_process_is_refused(cache_dir, tmp_path):
  workdirs = [tmp_path / str(i) for i in range(3)]
  locked = workdirs[1] / "fold_1" / workspace.LOCK_FILE
  holder = hold_lock(locked)
  try:
    with pytest.raises(errors.LockError, match=rf"{workdirs[1] / 'fold_1'} is in use by .* pid "
                       rf"{holder.pid} "):
      group.train_group(member_configs(cache_dir), 1, workdirs)
  finally:
    holder.kill()
    holder.wait()
  assert not (workdirs[0] / "fold_1").exists()  # refused before anything was written
  assert not list((workdirs[1] / "fold_1").glob("*.json"))


# ------------------------------------------------------------------------------------------------
# Preemption, kills, divergence


def signal_during_call(trainer, call, signum=signal.SIGTERM):
  """Makes `signum` arrive while the trainer runs its `call`-th train step."""
  jitted, calls = trainer.train_step, []

  def step(state, batch):
    calls.append(None)
    if len(calls) == call:
      signal.raise_signal(signum)
    return jitted(state, batch)

  trainer.train_step = step


@pytest.fixture(scope="module")
def unbroken(cache_dir):
  """The group's results without files or interruptions."""
  configs = member_configs(cache_dir)
  return group.GroupTrainer(configs, group.load_group_data(configs, 1), [None] * 3, None).run()


def test_sigterm_mid_epoch_saves_the_group_and_resumes_exactly(cache_dir, tmp_path, unbroken):
  configs = member_configs(cache_dir)
  data = group.load_group_data(configs, 1)
  fold_dirs = [tmp_path / f"m{m}" / "fold_1" for m in range(3)]
  state_dir = tmp_path / "group"

  def trainer():
    return group.GroupTrainer(configs, data, fold_dirs, state_dir)

  first = trainer()
  spe = first.steps_per_epoch
  handler = signal.getsignal(signal.SIGTERM)
  signal_during_call(first, spe + 3)  # the 3rd step of epoch 2
  with pytest.raises(errors.Preempted, match=rf"SIGTERM at fold 1 epoch 2 step 3/{spe} \(a group "
                     r"of 3 runs\); rerun the same command to resume \(from epoch 2 step 3\)"
                     ) as e:
    first.run()
  assert e.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is handler
  assert checkpoint_steps(state_dir / "checkpoints" / "latest") == [spe + 3]
  for fold_dir in fold_dirs:
    assert checkpoint_steps(fold_dir / "checkpoints" / "best") == [1]
  resumed = trainer().run()
  assert [without_timings(r) for r in resumed] == [without_timings(r) for r in unbroken]


KILL_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {repo!r}]
from helpers import tiny_config
from absl import logging
from wavejax import runtime
from wavejax.training import group
logging.set_verbosity(logging.INFO)
runtime.enable_compilation_cache()
configs = [tiny_config({cache!r}, **{{"train.learning_rate": lr, "seed": seed,
                                     "train.num_epochs": 3}}) for lr, seed in {members!r}]
group.train_group(configs, 1, [{workdir!r} + f"/m{{m}}" for m in range(len(configs))],
                  group_dir={workdir!r} + "/group")
"""


@pytest.mark.slow
def test_killed_group_resumes_to_the_same_numbers(cache_dir, tmp_path):
  """SIGKILL after the group's first checkpoint; the rerun resumes and ends as an unbroken group."""
  workdir = tmp_path / "w"
  script = KILL_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO), cache=str(cache_dir),
                              members=MEMBERS, workdir=str(workdir))
  process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=os.environ.copy(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while (not any(checkpoint_steps(d) for d in workdir.glob("group/group_*/checkpoints/latest"))
         and process.poll() is None and time.time() < deadline):
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert list(workdir.glob("group/group_*/checkpoints/latest/*")), process.stdout.read()[-3000:]
  assert not list(workdir.glob("m*/fold_1/result.json")), "finished before it was killed"
  rerun = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env=os.environ.copy())
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resumed after epoch" in rerun.stderr
  configs = member_configs(cache_dir, **{"train.num_epochs": 3})
  expected = group.GroupTrainer(configs, group.load_group_data(configs, 1), [None] * 3,
                                None).run()
  for m, want in enumerate(expected):
    got = json.loads((workdir / f"m{m}/fold_1/result.json").read_text())
    assert metrics_of(got["history"]) == metrics_of(want.history)


def test_a_diverging_member_fails_alone(cache_dir, monkeypatch, unbroken):
  """Member 1's weights turn NaN in epoch 2: it is reported and dropped; the others end exactly as
  in the unbroken group."""
  monkeypatch.setattr(loop, "FINITE_CHECK_EVERY", 2)
  configs = member_configs(cache_dir)
  trainer = group.GroupTrainer(configs, group.load_group_data(configs, 1), [None] * 3, None)
  jitted, calls = trainer.train_step, []

  def step(state, batch):
    calls.append(None)
    state, metrics = jitted(state, batch)
    if len(calls) >= 6 + 3:  # from the 3rd step of epoch 2
      poison = jnp.array([1.0, np.nan, 1.0])
      state = state.replace(params=jax.tree.map(
          lambda p: p * poison.reshape((-1,) + (1,) * (p.ndim - 1)), state.params))
      metrics = {**metrics, "loss_sum": metrics["loss_sum"] * poison}
    return state, metrics

  trainer.train_step = step
  outcome = trainer.run()
  assert outcome[1] is None and list(trainer.failed) == [1]
  assert trainer.failure_message() == (
      "1 of the group's 3 runs diverged: lr=0.003 seed=0: fold 1 epoch 2 step 4/6: the training "
      "loss is nan; lower config.train.learning_rate")
  for m in (0, 2):
    assert without_timings(outcome[m]) == without_timings(unbroken[m])


def test_make_group_train_step_trains_members_with_their_own_seeds(cache_dir):
  config = tiny_config(cache_dir)
  model = create_model(config.model, num_classes=4)
  step, state = group_steps.make_group_train_step(model, config, 3, num_samples=16000)
  own = steps.create_train_state(model, wavejax_config.resolve(
      tiny_config(cache_dir, seed=2)), 16000, 1, fold=1)
  for got, want in zip(jax.tree.leaves(group_steps.member_slice(state.params, 2)),
                       jax.tree.leaves(own.params)):
    np.testing.assert_array_equal(got, want)
  rng = np.random.default_rng(0)
  batch = {"waveforms": rng.normal(size=(3, 8, 16000)).astype(np.float32) * 0.1,
           "labels": rng.integers(0, 4, (3, 8)).astype(np.int32),
           "weights": np.ones((3, 8), np.float32)}
  state, metrics = step(state, batch)
  assert metrics["loss_sum"].shape == (3,) and np.all(np.isfinite(metrics["loss_sum"]))
  assert state.step.tolist() == [1, 1, 1]
  assert len(set(np.asarray(metrics["loss_sum"]).tolist())) == 3
