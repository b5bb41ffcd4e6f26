"""Training: steps lower the loss, results are deterministic, resume equals an unbroken run (after
SIGKILL, and after SIGTERM mid-epoch), NaN stops a run without saving it, several devices give the
metrics of one."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from helpers import REPO, tiny_config, tiny_flags
from wavejax import config as wavejax_config
from wavejax import errors, runtime, training
from wavejax.data import pipeline
from wavejax.models import create_model, layers
from wavejax.reporting import results
from wavejax.training import feeding, loop, precise_bn, steps, workspace


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", autouse=True)
def compilation_cache():
  """Every FoldTrainer jits its steps again; the persistent cache (the tests' own folder, see
  conftest.py) turns the recompilations into loads, as it does for the command line."""
  runtime.enable_compilation_cache()


def metrics_of(history):
  return [{k: r[k] for k in ("epoch", "train_loss", "train_running_acc", "val", "test")}
          for r in history]


def test_train_steps_lower_the_loss(cache_dir):
  config = tiny_config(cache_dir)
  data = training.load_fold_data(config, 1)
  model = create_model(config.model, num_classes=4)
  state = steps.create_train_state(model, config, data.waveforms.shape[1], 1, fold=1)
  batch = next(pipeline.batches(data.waveforms, data.targets, data.split.train[:16], 16))
  step = jax.jit(steps.train_step)
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss_sum"] / metrics["count"]))
  assert losses[-1] < 0.7 * losses[0], losses
  assert int(state.step) == 8


def test_padded_examples_do_not_count(cache_dir):
  config = tiny_config(cache_dir)
  data = training.load_fold_data(config, 1)
  order = data.split.train[:5]
  batch = list(pipeline.batches(data.waveforms, data.targets, order, 8))
  assert len(batch) == 1
  np.testing.assert_array_equal(batch[0]["weights"], [1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(batch[0]["labels"][:5], data.targets[order])


@pytest.mark.parametrize("count, batch_size, multiple, sizes", [
    (12, 64, 1, [16]), (28, 64, 1, [32]), (64, 64, 1, [64]), (130, 64, 1, [64, 64, 2]),
    (129, 64, 8, [64, 64, 8]), (100, 64, 8, [64, 64]), (5, 64, 8, [8]), (0, 64, 1, []),
    (33, 48, 4, [48])])
def test_evaluation_batches_pad_the_rest_to_a_power_of_two(count, batch_size, multiple, sizes):
  assert pipeline.evaluation_batch_sizes(count, batch_size, multiple) == sizes


def test_evaluation_in_smaller_batches_predicts_the_same(cache_dir):
  """Evaluation's last batch is padded only to a power of two: the same predictions as one batch
  padded to the full evaluation size, every index predicted once, in order."""
  config = tiny_config(cache_dir)
  data = training.load_fold_data(config, 2)
  trainer = training.FoldTrainer(config, data, None)
  size = trainer.eval_batch_size
  indices = np.resize(np.concatenate([data.split.test, data.split.val]), size + 3)
  shapes = [batch["waveforms"].shape[0] for batch in trainer.eval_batches(indices)]
  assert shapes == [size, 4]
  padded_to_full = np.concatenate(
      [np.asarray(trainer.eval_step(trainer.state, batch)[0])
       for batch in trainer.batches(indices, size)])[:len(indices)]
  predicted, probabilities = trainer.predict(indices)
  assert predicted.shape == (len(indices),) and probabilities.shape == (len(indices), 4)
  np.testing.assert_array_equal(predicted, padded_to_full)
  np.testing.assert_array_equal(probabilities.argmax(axis=1), predicted)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
  # The same utterance gives the same class wherever it sits: the rows are not mixed up.
  first = {index: cls for index, cls in zip(indices[::-1], predicted[::-1])}
  np.testing.assert_array_equal(predicted, [first[index] for index in indices])


def test_fold_is_deterministic_and_checkpoints(cache_dir, tmp_path):
  config = tiny_config(cache_dir)
  first = training.train_fold(config, 2, workdir=tmp_path / "a")
  second = training.train_fold(config, 2)
  assert metrics_of(first.history) == metrics_of(second.history)
  assert first.test_session == 2 and first.num_val == 4
  assert first.num_train + first.num_val + first.num_test == 60
  assert (tmp_path / "a/fold_2/result.json").exists()
  steps = 2 * -(-first.num_train // 8)  # latest/<optimiser step>, best/<epoch>
  latest = tmp_path / "a/fold_2/checkpoints/latest"
  assert sorted(p.name for p in latest.iterdir()) == [str(steps)]
  assert [p.name for p in (tmp_path / "a/fold_2/checkpoints/best").iterdir()] == [
      str(first.selected_epoch)]
  selected = first.history[first.selected_epoch - 1]
  assert first.test == selected["test"]
  assert first.best_test_wa == max(r["test"]["wa"] for r in first.history)
  # A finished fold is read back, not trained again; another config may not reuse the workdir.
  assert training.train_fold(config, 2, workdir=tmp_path / "a") == first
  config.train.learning_rate = 0.5
  with pytest.raises(errors.ConfigError, match="train.learning_rate"):
    training.train_fold(config, 2, workdir=tmp_path / "a")


def test_a_rejected_command_leaves_nothing_that_blocks_the_corrected_one(cache_dir, tmp_path):
  workdir = tmp_path / "w"
  for field, value in (("task", "emotionx"), ("train.batch_size", 0),
                       ("data.builtin.clip_seconds", -1.0), ("train.learning_rate", -1.0)):
    config = tiny_config(cache_dir, **{field: value})
    with pytest.raises(errors.ConfigError, match=field.split(".")[-1]):
      training.train_fold(config, 1, workdir=workdir)
  with pytest.raises(errors.ConfigError, match="out of range"):
    training.train_fold(tiny_config(cache_dir), 9, workdir=workdir)
  assert not list(workdir.glob("fold_*/config.json"))
  assert training.train_fold(tiny_config(cache_dir, **{"train.num_epochs": 1}), 1, workdir=workdir)


def test_one_workdir_holds_one_config_and_its_summary_every_fold(cache_dir, tmp_path):
  """A second command that adds fold 2 keeps fold 1 in the summary; a different config may not
  add a fold to the workdir."""
  config = tiny_config(cache_dir, **{"train.num_epochs": 1})
  workdir = tmp_path / "w"
  first, _ = training.cross_validate(config, workdir, [1])
  _, summary = training.cross_validate(config, workdir, [2])
  assert summary["folds"] == [1, 2]
  assert json.loads((workdir / "summary.json").read_text())["folds"] == [1, 2]
  assert summary["per_fold"][0]["test_session"] == first[0].test_session == 1
  other = tiny_config(cache_dir, **{"train.num_epochs": 1, "train.learning_rate": 1e-4})
  with pytest.raises(errors.ConfigError, match=r"fold_\d was written by a different config "
                     r"\(changed: train.learning_rate\)"):
    training.train_fold(other, 3, workdir=workdir)
  assert not (workdir / "fold_3").exists()


def test_unwritable_workdir_is_a_one_line_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  with pytest.raises(errors.WriteError, match=r"file.*cannot write .*choose another --workdir"):
    results.write_json(blocker / "fold_1" / "result.json", {"a": 1})
  assert blocker.read_text() == "not a folder"
  assert [p.name for p in tmp_path.iterdir()] == ["file"]


def run_main(args, env=None):
  return subprocess.Popen([sys.executable, "-m", "wavejax.main", *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **(env or {})})


def checkpoint_steps(directory):
  """The steps of the finished checkpoints in an Orbax folder (not its temporary folders)."""
  return sorted(int(p.name) for p in directory.glob("*") if p.name.isdigit())


def wait_for_checkpoint(process, directory, timeout=300):
  deadline = time.time() + timeout
  while not checkpoint_steps(directory) and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)


LONGER = {"train.num_epochs": 4, "data.builtin.utterances_per_speaker": 12}


@pytest.fixture(scope="module")
def longer_run(cache_dir):
  """The command line of a 4-epoch fold 1 (12 steps per epoch) and its unbroken result."""
  args = ["--config=configs/simplenet_cnn.py", "--folds=1", *tiny_flags(cache_dir, **LONGER)]
  return args, training.train_fold(tiny_config(cache_dir, **LONGER), 1)


def test_killed_run_resumes_to_the_same_numbers(longer_run, tmp_path):
  args, unbroken = longer_run
  workdir = tmp_path / "run"
  process = run_main([*args, f"--workdir={workdir}"])
  latest = workdir / "fold_1/checkpoints/latest"
  wait_for_checkpoint(process, latest)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert checkpoint_steps(latest), process.stdout.read()
  assert not (workdir / "fold_1/result.json").exists(), "run finished before it was killed"
  resumed = run_main([*args, f"--workdir={workdir}"])
  output, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, output
  assert "resumed after epoch" in output
  result = json.loads((workdir / "fold_1/result.json").read_text())
  assert metrics_of(result["history"]) == metrics_of(unbroken.history)


def test_sigterm_stops_the_command_and_the_rerun_resumes(longer_run, tmp_path):
  """SIGTERM after the first epoch's checkpoint (so during epoch 2, usually mid-epoch): exit code
  143, one line naming the position, a checkpoint there; the rerun ends like an unbroken run."""
  args, unbroken = longer_run
  workdir = tmp_path / "run"
  process = run_main([*args, f"--workdir={workdir}"])
  latest = workdir / "fold_1/checkpoints/latest"
  wait_for_checkpoint(process, latest)
  time.sleep(0.1)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 143, output
  last = output.strip().splitlines()[-1]
  match = re.fullmatch(r"wavejax: preempted by SIGTERM at fold 1 epoch (\d) step (\d+)/12; rerun "
                       r"the same command to resume \(from epoch \1 step \2\)", last)
  assert match, output[-3000:]
  epoch, step = int(match[1]), int(match[2])
  assert checkpoint_steps(latest) == [(epoch - 1) * 12 + step]
  resumed = run_main([*args, f"--workdir={workdir}"])
  output, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, output
  assert (f"resumed in epoch {epoch} at step {step}/12" if step else
          f"resumed after epoch {epoch - 1}") in output
  result = json.loads((workdir / "fold_1/result.json").read_text())
  assert metrics_of(result["history"]) == metrics_of(unbroken.history)


def signal_during_call(trainer, call, signum=signal.SIGTERM):
  """Makes `signum` arrive while the trainer runs its `call`-th train step."""
  jitted, calls = trainer.train_step, []

  def step(state, batch):
    calls.append(None)
    if len(calls) == call:
      signal.raise_signal(signum)
    return jitted(state, batch)

  trainer.train_step = step


def test_sigterm_mid_epoch_saves_and_resumes_exactly(cache_dir, tmp_path):
  config = wavejax_config.resolve(tiny_config(cache_dir))
  unbroken = training.train_fold(config, 1)
  data = training.load_fold_data(config, 1)
  trainer = training.FoldTrainer(config, data, tmp_path / "fold_1")
  steps = trainer.steps_per_epoch
  handler = signal.getsignal(signal.SIGTERM)
  signal_during_call(trainer, steps + 3)  # the 3rd step of epoch 2
  with pytest.raises(errors.Preempted, match=rf"SIGTERM at fold 1 epoch 2 step 3/{steps}; ") as e:
    trainer.run()
  assert e.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is handler
  assert checkpoint_steps(tmp_path / "fold_1/checkpoints/latest") == [steps + 3]
  assert checkpoint_steps(tmp_path / "fold_1/checkpoints/best") == [1]
  # The rerun continues epoch 2 at its 4th batch, with the epoch's sums so far.
  result = training.FoldTrainer(config, data, tmp_path / "fold_1").run()
  assert metrics_of(result.history) == metrics_of(unbroken.history)
  assert result == with_timings_of(unbroken, result)


def with_timings_of(expected, actual):
  """`expected` with the timings of `actual` (wall-clock numbers differ between runs)."""
  timings = ("train_seconds", "data_seconds", "utterances_per_s")
  history = [{**r, **{key: a[key] for key in timings}}
             for r, a in zip(expected.history, actual.history)]
  return dataclasses.replace(expected, history=history,
                             train_utterances_per_s=actual.train_utterances_per_s)


def test_nan_stops_the_run_and_is_never_saved(cache_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "FINITE_CHECK_EVERY", 2)
  config = wavejax_config.resolve(tiny_config(cache_dir, **{"train.num_epochs": 3}))
  data = training.load_fold_data(config, 1)

  def diverging_trainer(from_call):
    """A trainer whose weights and loss become NaN from its `from_call`-th train step on."""
    trainer = training.FoldTrainer(config, data, tmp_path / "fold_1")
    jitted, calls = trainer.train_step, []

    def step(state, batch):
      calls.append(None)
      state, metrics = jitted(state, batch)
      if len(calls) >= from_call:
        state = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
        metrics = {**metrics, "loss_sum": metrics["loss_sum"] * np.nan}
      return state, metrics

    trainer.train_step = step
    return trainer

  first = diverging_trainer(from_call=6 + 3)  # 6 steps per epoch: the 3rd step of epoch 2
  assert first.steps_per_epoch == 6
  with pytest.raises(errors.TrainingError,
                     match=r"fold 1 epoch 2 step 4/6: the training loss is nan; lower "
                           r"config.train.learning_rate \(the last good checkpoint is kept\)"):
    first.run()  # found by the check every 2 steps
  latest, best = tmp_path / "fold_1/checkpoints/latest", tmp_path / "fold_1/checkpoints/best"
  assert checkpoint_steps(latest) == [6] and checkpoint_steps(best) == [1]
  # A signal after the divergence does not save the bad state either.
  second = diverging_trainer(from_call=3)  # resumes after epoch 1: its 3rd call is epoch 2's 3rd
  signal_during_call(second, 3)
  with pytest.raises(errors.TrainingError, match=r"epoch 2 step 3/6: the training loss is nan"):
    second.run()
  assert checkpoint_steps(latest) == [6] and checkpoint_steps(best) == [1]
  # The good checkpoint restores, also under the epoch-numbered name older versions gave it.
  (latest / "6").rename(latest / "1")
  third = training.FoldTrainer(config, data, tmp_path / "fold_1")
  assert third.restore() == 1 and int(third.state.step) == 6
  assert bool(third.all_finite(third.weights()))
  third.checkpointer.close()


MULTI_DEVICE_SCRIPT = """
import json, sys
import jax, numpy as np
sys.path[:0] = [{tests!r}, {repo!r}]
from helpers import tiny_config
from wavejax import training
from wavejax.training import parallel
from wavejax.data import pipeline

config = tiny_config({cache!r})
data = training.load_fold_data(config, 3)
trainer = training.FoldTrainer(config, data, None)
before, _ = trainer.predict(data.split.test)
batch = next(pipeline.batches(data.waveforms, data.targets, data.split.train[:8], 8))
state, metrics = trainer.train_step(trainer.state, parallel.put_batch(batch, trainer.mesh))
# Adam's first moment after one step is (1 - b1) x the gradient: the data-parallel gradient
# itself, before Adam's g / sqrt(g^2) turns last-bit differences of near-zero entries into steps
# of a whole learning rate.
gradient = np.asarray(state.opt_state[0].mu["frontend"]["kernel"]).ravel() / 0.1
trainer.state = state
result = trainer.run()
print(json.dumps({{
    "devices": jax.device_count(),
    "batch_devices": len(parallel.put_batch(batch, trainer.mesh)["waveforms"].sharding.device_set),
    "loss": float(metrics["loss_sum"] / metrics["count"]),
    "gradient": gradient[::97].tolist(),
    "gradient_scale": float(np.abs(gradient).max()),
    "predictions": before.tolist(),
    "epochs": len(result.history),
}}))
"""


def test_several_devices_give_the_metrics_of_one(cache_dir, tmp_path):
  """One step's loss and gradient, and evaluation, agree across 1 and 8 devices (one example per
  device). (Whole runs drift apart: Adam turns last-bit differences of near-zero gradients into
  full-size steps.)"""
  script = MULTI_DEVICE_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO),
                                      cache=str(cache_dir))
  outputs = {}
  for count in (1, 8):
    # Several devices on one machine: the CPU's host devices, selected on any machine.
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs[count] = json.loads(done.stdout.strip().splitlines()[-1])
  one, eight = outputs[1], outputs[8]
  assert (one["devices"], eight["devices"], eight["batch_devices"]) == (1, 8, 8)
  assert one["predictions"] == eight["predictions"]
  np.testing.assert_allclose(one["loss"], eight["loss"], rtol=1e-5)
  np.testing.assert_allclose(one["gradient"], eight["gradient"], rtol=1e-4,
                             atol=1e-5 * one["gradient_scale"])
  assert one["gradient_scale"] > 0
  assert one["epochs"] == eight["epochs"] == 2


def test_frontend_learning_rate_multiplier(cache_dir):
  """With multiplier 0 the front-end kernel stays at its FIR initialisation; the head moves."""
  config = tiny_config(cache_dir, **{"train.frontend_lr_multiplier": 0.0})
  data = training.load_fold_data(config, 1)
  model = create_model(config.model, num_classes=4)
  state = steps.create_train_state(model, config, data.waveforms.shape[1], 1, fold=1)
  batch = next(pipeline.batches(data.waveforms, data.targets, data.split.train[:8], 8))
  new_state, _ = jax.jit(steps.train_step)(state, batch)
  np.testing.assert_array_equal(new_state.params["frontend"]["kernel"],
                                state.params["frontend"]["kernel"])
  head_moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                            new_state.params["head"], state.params["head"])
  assert min(jax.tree.leaves(head_moved)) > 0


def test_double_softmax_damps_the_gradient():
  logits = jax.numpy.array([[4.0, -1.0, 0.5, 0.0]])
  labels, weights = jax.numpy.array([1]), jax.numpy.array([1.0])
  plain = jax.grad(steps.cross_entropy)(logits, labels, weights)
  double = jax.grad(steps.cross_entropy)(logits, labels, weights, True)
  assert float(np.abs(double).max()) < 0.5 * float(np.abs(plain).max())


def test_faithful_switch_turns_on_every_code_behaviour(cache_dir):
  from wavejax import config as wavejax_config
  config = tiny_config(cache_dir, faithful_to_original=True)
  resolved = wavejax_config.resolve(config)
  assert resolved.train.double_softmax and not resolved.train.reshuffle
  assert resolved.train.drop_last_eval_batch and resolved.train.lr_schedule == "exponential"
  assert tuple(resolved.model.head.kernel) == (3, 3) and resolved.model.head.dropout == 0.5
  assert tuple(resolved.model.head.hidden) == (64,) and resolved.train.eval_batch_size == 32
  rnn = wavejax_config.get_config("simplenet_rnn")
  rnn.faithful_to_original = True
  rnn = wavejax_config.resolve(rnn)
  assert (rnn.model.frontend.fir_low_hz, rnn.model.frontend.fir_high_hz) == (0.8, 7600.8)
  assert not wavejax_config.resolve(tiny_config(cache_dir)).train.double_softmax


def test_no_reshuffle_repeats_the_epoch_order():
  idx, targets = np.arange(20), np.zeros(20, int)
  one = pipeline.epoch_order(idx, targets, seed=0, fold=1, epoch=1)
  two = pipeline.epoch_order(idx, targets, seed=0, fold=1, epoch=2)
  assert not np.array_equal(one, two) and sorted(one) == list(range(20))


class _NormFirst(nn.Module):
  """Batch norm straight on 3 input features, then a dense layer: its statistics are exact."""

  @nn.compact
  def __call__(self, x, *, train=False):
    x = nn.BatchNorm(use_running_average=not train, momentum=layers.BATCH_NORM_MOMENTUM)(x[:, :3])
    return nn.Dense(2)(x)


def test_precise_batch_norm_pools_batches_into_the_population_statistics():
  model = _NormFirst()
  x = np.random.default_rng(0).normal(2.0, 3.0, (4, 8, 5)).astype(np.float32)
  x[1] += 5.0  # batches with different means: the pooled variance must include their spread
  variables = model.init(jax.random.key(0), x[0])
  state = steps.TrainState.create(apply_fn=model.apply, params=variables["params"],
                                  batch_stats=variables["batch_stats"], tx=optax.adam(1e-3),
                                  key=jax.random.key_data(jax.random.key(1)))
  pooled = precise_bn.population_statistics([precise_bn.batch_moments(state, batch) for batch in x])
  everything = x.reshape(-1, 5)[:, :3]
  np.testing.assert_allclose(pooled["BatchNorm_0"]["mean"], everything.mean(0), rtol=1e-5)
  np.testing.assert_allclose(pooled["BatchNorm_0"]["var"], everything.var(0), rtol=1e-4)


def test_precise_batch_norm_replaces_the_running_statistics(cache_dir):
  config = tiny_config(cache_dir, **{"train.num_epochs": 1, "train.precise_bn_batches": 2})
  data = training.load_fold_data(config, 1)
  trainer = training.FoldTrainer(config, data, None)
  before = jax.device_get(trainer.state.batch_stats)
  trainer.recalibrate_batch_norm()
  after = jax.device_get(trainer.state.batch_stats)
  # The head's first batch norm sees the log filter energies (mean far from the initial 0).
  first = after["head"]["BatchNorm_0"]["mean"]
  assert np.all(np.abs(first - before["head"]["BatchNorm_0"]["mean"]) > 1.0)
  order = pipeline.epoch_order(data.split.train, data.targets, seed=config.seed, fold=1, epoch=0)
  batches = [data.waveforms[order[i * 8:(i + 1) * 8]] for i in range(2)]
  energies = [trainer.model.apply(trainer.state.variables(), b, train=True,
                                  method=lambda m, w, train: m.frontend(w, train=train),
                                  mutable=["batch_stats"])[0] for b in batches]
  np.testing.assert_allclose(first, np.concatenate(energies).reshape(-1, first.size).mean(0),
                             rtol=1e-4, atol=1e-4)


def test_workdirs_written_before_a_field_existed_still_resume(tmp_path):
  config = tiny_config(tmp_path / "cache")
  fold_dir = tmp_path / "fold_1"
  workspace.record_config(config, fold_dir)
  stored = json.loads((fold_dir / "config.json").read_text())
  del stored["model"]["compute_dtype"], stored["train"]["precise_bn_batches"]
  (fold_dir / "config.json").write_text(json.dumps(stored))
  workspace.check_config(config, fold_dir)  # the old behaviour: accepted
  config.model.compute_dtype = "bfloat16"
  with pytest.raises(errors.ConfigError, match="model.compute_dtype"):
    workspace.check_config(config, fold_dir)
  config.model.compute_dtype = "float32"
  del stored["train"]["batch_size"]  # not an added field: a real difference
  (fold_dir / "config.json").write_text(json.dumps(stored))
  with pytest.raises(errors.ConfigError, match="train.batch_size"):
    workspace.check_config(config, fold_dir)


def test_prefetch_keeps_order_and_runs_ahead():
  produced = []

  def source():
    for i in range(5):
      produced.append(i)
      yield i

  consumed = []
  for item in feeding.prefetch(source(), size=2):
    consumed.append(item)
    assert len(produced) == min(5, item + 3)  # two items ahead of the one in use
  assert consumed == list(range(5))
  timed = feeding.Timed(iter([1, 2]))
  assert list(timed) == [1, 2] and timed.seconds >= 0.0
