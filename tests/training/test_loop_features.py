"""The epoch loop's per-utterance predictions, batches gathered on the device, augmentation
inside the step, the profile trace, the parameter overview and the deterministic-kernels switch."""

import logging
import signal

import jax
import numpy as np
import pytest

from helpers import tiny_config
from wavejax import config as wavejax_config
from wavejax import errors, training
from wavejax.reporting import predictions, results
from wavejax.training import feeding, hooks, loop


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def metrics_of(history):
  return [{k: r[k] for k in ("train_loss", "train_running_acc", "val", "test")} for r in history]


def test_predictions_file_agrees_with_the_result(cache_dir, tmp_path):
  config = tiny_config(cache_dir, **{"train.num_epochs": 3})
  result = training.train_fold(config, 2, workdir=tmp_path)
  groups = predictions.read(tmp_path / "fold_2" / predictions.FILENAME)
  assert set(groups) == {("selected", "val"), ("selected", "test"), ("best_test", "val"),
                         ("best_test", "test")}
  selected, best = groups["selected", "test"], groups["best_test", "test"]
  assert selected.epoch == result.selected_epoch and best.epoch == result.best_test_epoch
  assert selected.classes == tuple(result.classes) and len(selected.labels) == result.num_test
  wa = lambda group: float(np.mean(group.labels == group.predicted))
  assert wa(selected) == pytest.approx(result.test["wa"])
  assert wa(best) == pytest.approx(result.best_test_wa)
  assert wa(groups["selected", "val"]) == pytest.approx(result.val["wa"])
  confusion = results.classification_metrics(selected.labels, selected.predicted,
                                             len(result.classes))["confusion"]
  assert confusion == result.test["confusion"]
  np.testing.assert_array_equal(selected.probabilities.argmax(axis=1), selected.predicted)
  assert set(selected.sessions) == {result.test_session}
  assert all(selected.speakers) and len(set(selected.utterance_ids)) == result.num_test


def signal_during_call(trainer, call, signum=signal.SIGTERM):
  jitted, calls = trainer.train_step, []

  def step(state, batch):
    calls.append(None)
    if len(calls) == call:
      signal.raise_signal(signum)
    return jitted(state, batch)

  trainer.train_step = step


AUGMENTED = {"train.augment.gain_db": 6.0, "train.augment.shift_seconds": 0.05,
             "train.augment.noise_snr_db": (10.0, 30.0), "train.augment.speed": 0.1,
             "train.augment.mixup_alpha": 0.4, "train.num_epochs": 3}


def test_augmented_run_is_deterministic_and_resumes_exactly(cache_dir, tmp_path):
  config = wavejax_config.resolve(tiny_config(cache_dir, **AUGMENTED))
  plain = training.train_fold(wavejax_config.resolve(tiny_config(cache_dir, **{
      "train.num_epochs": 3})), 1)
  unbroken = training.train_fold(config, 1, workdir=tmp_path / "a")
  assert metrics_of(unbroken.history) != metrics_of(plain.history)  # augmentation did something
  data = training.load_fold_data(config, 1)
  trainer = training.FoldTrainer(config, data, tmp_path / "b" / "fold_1")
  signal_during_call(trainer, trainer.steps_per_epoch + 2)
  with pytest.raises(errors.Preempted):
    trainer.run()
  resumed = training.FoldTrainer(config, data, tmp_path / "b" / "fold_1").run()
  assert metrics_of(resumed.history) == metrics_of(unbroken.history)
  # The selected and best-test predictions survive the preemption too.
  kept, again = (predictions.read(tmp_path / run / "fold_1" / predictions.FILENAME)
                 for run in ("a", "b"))
  assert set(kept) == set(again) and len(kept) == 4
  for key, group in kept.items():
    assert again[key].epoch == group.epoch
    np.testing.assert_array_equal(again[key].predicted, group.predicted)
    np.testing.assert_allclose(again[key].probabilities, group.probabilities, atol=1e-6)


def test_batches_gathered_on_the_device_give_the_host_path_numbers(cache_dir):
  host = training.train_fold(tiny_config(cache_dir, **{"train.data_on_device": "never"}), 3)
  device = tiny_config(cache_dir, **{"train.data_on_device": "always"})
  data = training.load_fold_data(device, 3)
  trainer = training.FoldTrainer(device, data, None)
  assert trainer.feeder.on_device is not None
  result = trainer.run()
  assert metrics_of(result.history) == metrics_of(host.history)
  with pytest.raises(errors.ConfigError, match="config.train.data_on_device='gpu'"):
    feeding.use_device(data.waveforms, trainer.mesh, "gpu")


def test_auto_keeps_data_on_the_host_on_cpu_and_checks_device_memory(monkeypatch):
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  clips = np.zeros((10, 100), np.float32)
  if jax.default_backend() == "cpu":
    assert not feeding.use_device(clips, mesh, "auto")
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(feeding, "device_bytes_limit", lambda devices: 10_000)
  assert feeding.use_device(clips, mesh, "auto")  # 4 kB <= 40 % of 10 kB
  monkeypatch.setattr(feeding, "device_bytes_limit", lambda devices: 9_000)
  assert not feeding.use_device(clips, mesh, "auto")
  monkeypatch.setattr(feeding, "device_bytes_limit", lambda devices: None)
  assert not feeding.use_device(clips, mesh, "auto")


def test_profile_trace_and_parameter_overview(cache_dir, tmp_path, caplog):
  config = tiny_config(cache_dir, **{"train.profile_steps": 2, "train.num_epochs": 1})
  with caplog.at_level(logging.INFO):
    training.train_fold(config, 1, workdir=tmp_path)
  traces = list((tmp_path / "fold_1" / "profile").rglob("*.xplane.pb"))
  assert traces and traces[0].stat().st_size > 0
  overview = next(r.getMessage() for r in caplog.records if "parameters\n" in r.getMessage())
  data = training.load_fold_data(wavejax_config.resolve(config), 1)
  params = training.FoldTrainer(wavejax_config.resolve(config), data, None).state.params
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert f"total {count:,d}" in " ".join(overview.split())
  assert "frontend" in overview and "head/" in overview


def test_parameter_overview_lists_modules_and_bytes():
  params = {"frontend": {"kernel": np.zeros((256, 64), np.float32), "bias": np.zeros(64,
                                                                                       np.float32)},
            "head": {"Dense_0": {"kernel": np.zeros((10, 4), np.float32)}}}
  lines = hooks.parameter_overview(params).splitlines()
  assert [line.split()[0] for line in lines] == ["frontend", "head/Dense_0", "total"]
  assert lines[0].split()[1] == "16,448" and lines[-1].split()[1] == "16,488"
  assert lines[-1].split()[2] == f"{16488 * 4 / 1024:.1f}"


def test_deterministic_gpu_kernels_switch(monkeypatch):
  train = wavejax_config.get_config("simplenet_cnn").train
  assert train.deterministic
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert loop.jit_options(train) == {"compiler_options": {"xla_gpu_deterministic_ops": True}}
  train.deterministic = False
  assert loop.jit_options(train) == {}
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  train.deterministic = True
  assert loop.jit_options(train) == {}
  # The option is one XLA knows: a jit that passes it compiles here too.
  options = {"compiler_options": {"xla_gpu_deterministic_ops": True}}
  assert float(jax.jit(lambda x: x * 2, **options)(np.float32(2))) == 4.0
