"""Training: steps lower the loss, results are deterministic, resume equals an unbroken run,
several devices give the metrics of one."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import flax.linen as nn
import optax
import pytest

from wavejax import errors, train
from wavejax.data import pipeline
from wavejax.models import create_model, layers

from helpers import REPO, tiny_config, tiny_flags


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def metrics_of(history):
  return [{k: r[k] for k in ("epoch", "train_loss", "train_running_acc", "val", "test")}
          for r in history]


def test_train_steps_lower_the_loss(cache_dir):
  config = tiny_config(cache_dir)
  data = train.load_fold_data(config, 1)
  model = create_model(config.model, num_classes=4)
  state = train.create_train_state(model, config, data.waveforms.shape[1], 1, fold=1)
  batch = next(pipeline.batches(data.waveforms, data.targets, data.split.train[:16], 16))
  step = jax.jit(train.train_step)
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss_sum"] / metrics["count"]))
  assert losses[-1] < 0.7 * losses[0], losses
  assert int(state.step) == 8


def test_padded_examples_do_not_count(cache_dir):
  config = tiny_config(cache_dir)
  data = train.load_fold_data(config, 1)
  order = data.split.train[:5]
  batch = list(pipeline.batches(data.waveforms, data.targets, order, 8))
  assert len(batch) == 1
  np.testing.assert_array_equal(batch[0]["weights"], [1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(batch[0]["labels"][:5], data.targets[order])


def test_fold_is_deterministic_and_checkpoints(cache_dir, tmp_path):
  config = tiny_config(cache_dir)
  first = train.train_fold(config, 2, workdir=tmp_path / "a")
  second = train.train_fold(config, 2)
  assert metrics_of(first.history) == metrics_of(second.history)
  assert first.test_session == 2 and first.num_val == 4
  assert first.num_train + first.num_val + first.num_test == 60
  assert (tmp_path / "a/fold_2/result.json").exists()
  assert sorted(p.name for p in (tmp_path / "a/fold_2/checkpoints/latest").iterdir()) == ["2"]
  selected = first.history[first.selected_epoch - 1]
  assert first.test == selected["test"]
  assert first.best_test_wa == max(r["test"]["wa"] for r in first.history)
  # A finished fold is read back, not trained again; another config may not reuse the workdir.
  assert train.train_fold(config, 2, workdir=tmp_path / "a") == first
  config.train.learning_rate = 0.5
  with pytest.raises(errors.ConfigError, match="train.learning_rate"):
    train.train_fold(config, 2, workdir=tmp_path / "a")


def run_main(args, env=None):
  return subprocess.Popen([sys.executable, "-m", "wavejax.main", *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **(env or {})})


def test_killed_run_resumes_to_the_same_numbers(cache_dir, tmp_path):
  args = ["--config=configs/simplenet_cnn.py", "--folds=1",
          *tiny_flags(cache_dir, **{"train.num_epochs": 4,
                                    "data.builtin.utterances_per_speaker": 12})]
  unbroken = train.train_fold(
      tiny_config(cache_dir, **{"train.num_epochs": 4, "data.builtin.utterances_per_speaker": 12}),
      1)
  workdir = tmp_path / "run"
  process = run_main([*args, f"--workdir={workdir}"])
  first_checkpoint = workdir / "fold_1/checkpoints/latest/1"
  deadline = time.time() + 300
  while not first_checkpoint.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert first_checkpoint.exists(), process.stdout.read()
  assert not (workdir / "fold_1/result.json").exists(), "run finished before it was killed"
  resumed = run_main([*args, f"--workdir={workdir}"])
  output, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, output
  assert "resumed after epoch" in output
  result = json.loads((workdir / "fold_1/result.json").read_text())
  assert metrics_of(result["history"]) == metrics_of(unbroken.history)


MULTI_DEVICE_SCRIPT = """
import json, sys
import jax, numpy as np
sys.path[:0] = [{tests!r}, {repo!r}]
from helpers import tiny_config
from wavejax import parallel, train
from wavejax.data import pipeline
from wavejax.models import create_model, layers

config = tiny_config({cache!r})
data = train.load_fold_data(config, 3)
trainer = train.FoldTrainer(config, data, None)
before = trainer.predict(data.split.test)
batch = next(pipeline.batches(data.waveforms, data.targets, data.split.train[:8], 8))
state, metrics = trainer.train_step(trainer.state, parallel.put_batch(batch, trainer.mesh))
kernel = np.asarray(state.params["frontend"]["kernel"]).ravel()[::97].tolist()
trainer.state = state
result = trainer.run()
print(json.dumps({{
    "devices": jax.device_count(),
    "batch_devices": len(parallel.put_batch(batch, trainer.mesh)["waveforms"].sharding.device_set),
    "loss": float(metrics["loss_sum"] / metrics["count"]),
    "kernel": kernel,
    "predictions": before.tolist(),
    "epochs": len(result.history),
}}))
"""


def test_several_devices_give_the_metrics_of_one(cache_dir, tmp_path):
  """One step and evaluation agree across 1 and 4 devices. (Whole runs drift apart: Adam turns
  last-bit differences of near-zero gradients into full-size steps.)"""
  script = MULTI_DEVICE_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO),
                                      cache=str(cache_dir))
  outputs = {}
  for count in (1, 4):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs[count] = json.loads(done.stdout.strip().splitlines()[-1])
  one, four = outputs[1], outputs[4]
  assert (one["devices"], four["devices"], four["batch_devices"]) == (1, 4, 4)
  assert one["predictions"] == four["predictions"]
  np.testing.assert_allclose(one["loss"], four["loss"], rtol=1e-5)
  np.testing.assert_allclose(one["kernel"], four["kernel"], rtol=1e-5, atol=1e-7)
  assert one["epochs"] == four["epochs"] == 2


def test_frontend_learning_rate_multiplier(cache_dir):
  """With multiplier 0 the front-end kernel stays at its FIR initialisation; the head moves."""
  config = tiny_config(cache_dir, **{"train.frontend_lr_multiplier": 0.0})
  data = train.load_fold_data(config, 1)
  model = create_model(config.model, num_classes=4)
  state = train.create_train_state(model, config, data.waveforms.shape[1], 1, fold=1)
  batch = next(pipeline.batches(data.waveforms, data.targets, data.split.train[:8], 8))
  new_state, _ = jax.jit(train.train_step)(state, batch)
  np.testing.assert_array_equal(new_state.params["frontend"]["kernel"],
                                state.params["frontend"]["kernel"])
  head_moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                            new_state.params["head"], state.params["head"])
  assert min(jax.tree.leaves(head_moved)) > 0


def test_double_softmax_damps_the_gradient():
  logits = jax.numpy.array([[4.0, -1.0, 0.5, 0.0]])
  labels, weights = jax.numpy.array([1]), jax.numpy.array([1.0])
  plain = jax.grad(train.cross_entropy)(logits, labels, weights)
  double = jax.grad(train.cross_entropy)(logits, labels, weights, True)
  assert float(np.abs(double).max()) < 0.5 * float(np.abs(plain).max())


def test_faithful_switch_turns_on_every_code_behaviour(cache_dir):
  from wavejax import config as wavejax_config
  config = tiny_config(cache_dir, faithful_to_original=True)
  resolved = wavejax_config.resolve(config)
  assert resolved.train.double_softmax and not resolved.train.reshuffle
  assert resolved.train.drop_last_eval_batch and resolved.train.lr_schedule == "exponential"
  assert tuple(resolved.model.head.kernel) == (3, 3) and resolved.model.head.dropout == 0.5
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
  state = train.TrainState.create(apply_fn=model.apply, params=variables["params"],
                                  batch_stats=variables["batch_stats"], tx=optax.adam(1e-3),
                                  key=jax.random.key_data(jax.random.key(1)))
  pooled = train.population_statistics([train.batch_moments(state, batch) for batch in x])
  everything = x.reshape(-1, 5)[:, :3]
  np.testing.assert_allclose(pooled["BatchNorm_0"]["mean"], everything.mean(0), rtol=1e-5)
  np.testing.assert_allclose(pooled["BatchNorm_0"]["var"], everything.var(0), rtol=1e-4)


def test_precise_batch_norm_replaces_the_running_statistics(cache_dir):
  config = tiny_config(cache_dir, **{"train.num_epochs": 1, "train.precise_bn_batches": 2})
  data = train.load_fold_data(config, 1)
  trainer = train.FoldTrainer(config, data, None)
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
