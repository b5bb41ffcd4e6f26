"""Tests of wavejax.predict: a trained run's best checkpoint classifies waveforms and files."""

import json
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile

from helpers import REPO, tiny_config
from wavejax import config as wavejax_config
from wavejax import errors, training
from wavejax.data import audio
from wavejax.inference import model as predict
from wavejax.reporting import results
from wavejax.training import workspace

FOLD = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A one-epoch run of fold 2 (fold_1 exists but has no checkpoint), with its trainer."""
  workdir = tmp_path_factory.mktemp("run")
  config = wavejax_config.resolve(tiny_config(tmp_path_factory.mktemp("cache"),
                                              **{"train.num_epochs": 1}))
  fold_dir = workdir / f"fold_{FOLD}"
  (workdir / "fold_1").mkdir()
  workspace.record_config(config, fold_dir)  # what train_fold does: fold_<k>/config.json
  data = training.load_fold_data(config, FOLD)
  trainer = training.FoldTrainer(config, data, fold_dir)
  result = trainer.run()
  results.save_fold(result, fold_dir / "result.json")
  return workdir, trainer, data, result


def test_load_model_reproduces_the_trainers_best_model(run):
  workdir, trainer, data, result = run
  loaded = predict.load_model(workdir)
  assert loaded.fold == FOLD and loaded.epoch == result.selected_epoch
  assert loaded.classes == tuple(result.classes)
  waveforms = data.waveforms[data.split.test]
  probabilities = loaded.probabilities(waveforms, batch_size=8)
  logits = trainer.state.apply_fn(trainer.state.replace(**trainer.best).variables(),
                                  waveforms, train=False)
  np.testing.assert_allclose(probabilities, jax.nn.softmax(logits), atol=1e-5)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
  confusion = results.confusion_matrix(data.targets[data.split.test],
                                       probabilities.argmax(axis=1), len(loaded.classes))
  assert confusion.tolist() == result.test["confusion"]


def write_files(run, tmp_path):
  """A corpus wav as it is, and the same audio as stereo 44.1 kHz float."""
  _, _, data, _ = run
  original = data.manifest[int(data.split.test[0])].path
  waveform, rate = soundfile.read(original, dtype="float32")
  stereo = tmp_path / "stereo.wav"
  resampled = audio.resample(waveform, rate, 44100)
  soundfile.write(stereo, np.stack([resampled, resampled], axis=1), 44100, subtype="FLOAT")
  return [original, str(stereo)]


def test_predict_files(run, tmp_path):
  workdir, _, _, _ = run
  loaded = predict.load_model(workdir, fold=FOLD)
  paths = write_files(run, tmp_path)
  entries = loaded.predict_files(paths)
  assert [e["path"] for e in entries] == paths
  for entry in entries:
    assert entry["label"] in loaded.classes
    assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
  # The stereo, resampled copy is the same audio: nearly the same probabilities.
  first, second = (np.array(list(e["probabilities"].values())) for e in entries)
  np.testing.assert_allclose(first, second, atol=0.05)


def test_cli_json_and_text(run, tmp_path):
  workdir, _, _, _ = run
  paths = write_files(run, tmp_path)
  out = subprocess.run([sys.executable, "-m", "wavejax.predict", f"--workdir={workdir}",
                        "--json", *paths], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  report = json.loads(out.stdout)
  assert report["fold"] == FOLD and len(report["predictions"]) == 2
  assert report["predictions"][0]["label"] in report["classes"]
  out = subprocess.run([sys.executable, "-m", "wavejax.predict", f"--workdir={workdir}",
                        paths[0], str(tmp_path / "missing.wav")], cwd=REPO,
                       capture_output=True, text=True)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith("wavejax: error: ")
  assert "missing.wav" in out.stderr


def test_errors_name_the_folder(run, tmp_path):
  workdir, _, _, _ = run
  with pytest.raises(errors.CheckpointError, match="no such run folder"):
    predict.load_model(tmp_path / "nowhere")
  with pytest.raises(errors.CheckpointError, match="no fold_<k>/checkpoints/best"):
    predict.load_model(tmp_path)
  with pytest.raises(errors.CheckpointError, match=r"fold_1: no best checkpoint.*\(2\)"):
    predict.load_model(workdir, fold=1)


def damaged_copy(run, tmp_path):
  """A copy of the run whose best checkpoint has bytes flipped in its largest file."""
  workdir = tmp_path / "run"
  shutil.copytree(run[0], workdir)
  best = next((workdir / f"fold_{FOLD}/checkpoints/best").glob("[0-9]*"))
  target = max((p for p in best.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  for position in np.linspace(len(data) // 4, len(data) - 8, 64).astype(int):
    data[position] ^= 0xFF
  target.write_bytes(bytes(data))
  return workdir, best


def test_a_damaged_best_checkpoint_is_one_line_naming_it(run, tmp_path):
  workdir, best = damaged_copy(run, tmp_path)
  paths = write_files(run, tmp_path)
  out = subprocess.run([sys.executable, "-m", "wavejax.predict", f"--workdir={workdir}",
                        *paths], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 1 and "nan" not in out.stdout.lower(), out.stdout + out.stderr[-2000:]
  errors_printed = [line for line in out.stderr.splitlines() if "error:" in line]
  assert errors_printed == [out.stderr.strip().splitlines()[-1]]
  assert errors_printed[0].startswith(f"wavejax: error: {best}: damaged checkpoint (")
  assert errors_printed[0].endswith(f"delete {workdir / f'fold_{FOLD}'} and rerun the training "
                                    "command: the fold trains again from its first epoch (its "
                                    "best weights were kept in this checkpoint alone)")
  assert "Traceback" not in out.stderr


def test_non_finite_probabilities_are_an_error_naming_the_checkpoint(run):
  workdir, _, data, _ = run
  loaded = predict.load_model(workdir)
  # Finite weights whose logits overflow to +-inf: softmax gives NaN.
  loaded.variables = jax.tree.map(lambda w: np.full_like(w, 3e38) if w.ndim == 2 else w,
                                  loaded.variables)
  with pytest.raises(errors.CheckpointError, match=re.escape(
      f"{loaded.fold_dir / 'checkpoints/best' / str(loaded.epoch)}: the model gives NaN or "
      "infinite probabilities for finite audio")):
    loaded.probabilities(data.waveforms[data.split.test[:2]])
  loaded = predict.load_model(workdir)
  with pytest.raises(errors.AudioError, match="waveform 1 has NaN"):
    loaded.probabilities(np.stack([data.waveforms[0], np.full_like(data.waveforms[0], np.nan)]))


def test_a_damaged_config_record_is_named(run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(run[0], workdir)
  (workdir / f"fold_{FOLD}/config.json").write_text('{"data": {"sample')
  with pytest.raises(errors.CheckpointError, match=re.escape(
      f"{workdir / f'fold_{FOLD}/config.json'}: cannot read the run's config (")) as raised:
    predict.load_model(workdir)
  assert "delete it and rerun the training command" in str(raised.value)


def test_a_read_only_run_is_read_without_writing(run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(run[0], workdir)
  shutil.rmtree(workdir / f"fold_{FOLD}/checkpoints/latest")
  before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
  assert predict.load_model(workdir).fold == FOLD
  assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before
