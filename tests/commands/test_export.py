"""Tests of wavejax.export: a trained run exported to StableHLO and ONNX gives the probabilities
of `load_model(...).probabilities` on the built-in corpus's clips, reloaded without wavejax."""

import importlib.metadata
import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import configs.simplenet_rnn as simplenet_rnn_config
from helpers import REPO, TINY, tiny_config
from wavejax import cli, errors, runtime, training
from wavejax import config as wavejax_config
from wavejax.data import audio
from wavejax.inference import export as wavejax_export
from wavejax.inference import model as predict

FOLD = 1
# Largest difference allowed between an export's probabilities and the model's own. Measured on
# this CPU: at most ~1e-7 (the front-end's "conv" method against its Toeplitz products, and
# onnxruntime's kernels against XLA's, differ by float32 rounding).
TOLERANCE = 1e-5


@pytest.fixture(scope="session", autouse=True)
def compilation_cache():
  runtime.enable_compilation_cache()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def trained_run(workdir, config):
  """One epoch of fold `FOLD` of `config`, written to `workdir` as the trainer does."""
  training.train_fold(config, FOLD, workdir)
  return workdir


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory, cache_dir):
  return trained_run(tmp_path_factory.mktemp("cnn"),
                     tiny_config(cache_dir, **{"train.num_epochs": 1}))


@pytest.fixture(scope="session")
def lstm_run(tmp_path_factory, cache_dir):
  config = simplenet_rnn_config.get_config()
  for key, value in {**TINY, "data.cache_dir": str(cache_dir), "train.num_epochs": 1}.items():
    wavejax_config.set_field(config, key, value)
  return trained_run(tmp_path_factory.mktemp("lstm"), config)


def corpus_clips(cache_dir, loaded, count=3):
  """The first `count` wav files of the built-in corpus, decoded as the trainer decodes them."""
  paths = sorted(cache_dir.rglob("*.wav"))[:count]
  assert len(paths) == count
  return np.stack([audio.load(p, loaded.sample_rate, loaded.clip_seconds) for p in paths])


def reference(loaded, clips):
  with jax.default_matmul_precision("highest"):
    return loaded.probabilities(clips)


def check_metadata(info, loaded, export_format, batch_size):
  assert info["format"] == export_format
  assert info["model"] == loaded.config.model.name
  assert info["classes"] == list(loaded.classes)
  assert (info["sample_rate"], info["clip_seconds"], info["num_samples"]) == (
      loaded.sample_rate, loaded.clip_seconds, loaded.num_samples)
  assert (info["fold"], info["epoch"]) == (FOLD, loaded.epoch)
  assert info["input"]["shape"] == [batch_size, loaded.num_samples]
  assert info["output"]["shape"] == [batch_size, len(loaded.classes)]


def check_stablehlo(run, cache_dir, tmp_path):
  """Exports `run` with a symbolic batch, reloads it with `jax.export` alone and compares its
  probabilities at batch sizes 1 and 3; returns the largest difference."""
  loaded = predict.load_model(run)
  path = tmp_path / "model.stablehlo"
  info = wavejax_export.export_stablehlo(loaded, path)
  check_metadata(info, loaded, "stablehlo", None)
  assert json.loads(wavejax_export.sidecar_path(path).read_text()) == info
  assert {"cpu", "cuda"} <= set(info["platforms"])

  exported = jax.export.deserialize(bytearray(path.read_bytes()))
  assert jax.export.is_symbolic_dim(exported.in_avals[0].shape[0])
  fn, loaded_info = wavejax_export.load_stablehlo(path)
  assert loaded_info == info
  clips = corpus_clips(cache_dir, loaded)
  expected = reference(loaded, clips)
  differences = []
  for batch in (clips[:1], clips):
    got = np.asarray(exported.call(jnp.asarray(batch)))
    assert got.shape == (len(batch), len(loaded.classes))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fn(batch)), got, atol=1e-7)
    differences.append(np.abs(got - expected[:len(batch)]).max())
  assert max(differences) < TOLERANCE
  return max(differences)


def check_onnx(run, cache_dir, tmp_path):
  """Exports `run` at batch sizes 1 and 3 and compares onnxruntime's probabilities."""
  onnx = pytest.importorskip("onnx")
  onnxruntime = pytest.importorskip("onnxruntime")
  pytest.importorskip("jax2onnx")
  loaded = predict.load_model(run)
  clips = corpus_clips(cache_dir, loaded)
  expected = reference(loaded, clips)
  differences = []
  for batch_size in (1, 3):
    path = tmp_path / f"model_{batch_size}.onnx"
    info = wavejax_export.export_onnx(loaded, path, batch_size=batch_size)
    check_metadata(info, loaded, "onnx", batch_size)
    assert json.loads(wavejax_export.sidecar_path(path).read_text()) == info
    model = onnx.load(str(path))
    assert {p.key: json.loads(p.value) for p in model.metadata_props} == info
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert (model_input.name, model_input.shape) == ("waveforms", [batch_size, loaded.num_samples])
    got = session.run(["probabilities"], {"waveforms": clips[:batch_size]})[0]
    assert got.shape == (batch_size, len(loaded.classes))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    differences.append(np.abs(got - expected[:batch_size]).max())
  assert max(differences) < TOLERANCE
  return max(differences)


def test_stablehlo_cnn_matches_the_model(cnn_run, cache_dir, tmp_path):
  check_stablehlo(cnn_run, cache_dir, tmp_path)


def test_onnx_cnn_matches_the_model(cnn_run, cache_dir, tmp_path):
  check_onnx(cnn_run, cache_dir, tmp_path)


@pytest.mark.slow
def test_stablehlo_lstm_matches_the_model(lstm_run, cache_dir, tmp_path):
  check_stablehlo(lstm_run, cache_dir, tmp_path)


@pytest.mark.slow
def test_onnx_lstm_matches_the_model(lstm_run, cache_dir, tmp_path):
  """jax2onnx converts the LSTMs' `lax.scan` (into an ONNX Loop)."""
  check_onnx(lstm_run, cache_dir, tmp_path)


class PlatformDependent(nn.Module):
  """No parameters; `lax.platform_dependent`, which ONNX has no counterpart for."""
  num_classes: int

  @nn.compact
  def __call__(self, waveforms, train=False):
    del train
    pooled = waveforms[:, :self.num_classes]
    return lax.platform_dependent(pooled, cpu=jnp.tanh, default=jnp.sin)


def test_an_op_onnx_cannot_express_fails_with_one_line(cnn_run, tmp_path, monkeypatch, capsys):
  pytest.importorskip("jax2onnx")
  pytest.importorskip("onnxruntime")
  monkeypatch.setattr(wavejax_export, "create_model",
                      lambda config, num_classes: PlatformDependent(num_classes))
  loaded = predict.load_model(cnn_run)
  with pytest.raises(errors.ExportError) as caught:
    wavejax_export.export(loaded, "onnx", tmp_path / "model.onnx")
  message = str(caught.value)
  version = importlib.metadata.version("jax2onnx")
  assert message == (f"onnx export of simplenet_cnn: the JAX op 'platform_index' has no ONNX "
                     f"conversion in jax2onnx {version}; use --format=stablehlo")
  assert isinstance(caught.value, errors.WavejaxError)
  assert cli.error_status("wavejax", caught.value) == 1
  assert capsys.readouterr().err == f"wavejax: error: {message}\n"
  assert not list(tmp_path.iterdir())
  # The advice holds: StableHLO carries the op (one branch per platform).
  wavejax_export.export(loaded, "stablehlo", tmp_path / "model.stablehlo")
  fn, _ = wavejax_export.load_stablehlo(tmp_path / "model.stablehlo")
  waveforms = np.linspace(-1, 1, 2 * loaded.num_samples, dtype=np.float32).reshape(2, -1)
  branch = jnp.tanh if jax.default_backend() == "cpu" else jnp.sin
  expected = jax.nn.softmax(branch(waveforms[:, :len(loaded.classes)]), axis=-1)
  np.testing.assert_allclose(fn(waveforms), expected, rtol=1e-6, atol=1e-7)


def test_missing_onnx_packages_say_what_to_install(cnn_run, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import fails as if not installed
  loaded = predict.load_model(cnn_run)
  with pytest.raises(errors.ExportError, match=r"pip install 'wavejax\[onnx\]'$"):
    wavejax_export.export(loaded, "onnx", tmp_path / "model.onnx")


def test_bad_arguments_and_files(cnn_run, tmp_path):
  loaded = predict.load_model(cnn_run)
  (tmp_path / "file").write_text("")
  with pytest.raises(errors.WriteError, match=r"file.*cannot write"):
    wavejax_export.export(loaded, "stablehlo", tmp_path / "file" / "model.stablehlo")
  with pytest.raises(errors.ExportError, match="--batch_size=0"):
    wavejax_export.export(loaded, "stablehlo", tmp_path / "m", batch_size=0)
  with pytest.raises(errors.ExportError, match="--format=tflite"):
    wavejax_export.export(loaded, "tflite", tmp_path / "m")
  with pytest.raises(errors.ExportError, match="missing.stablehlo: cannot read"):
    wavejax_export.load_stablehlo(tmp_path / "missing.stablehlo")
  (tmp_path / "junk").write_bytes(b"not an export")
  (tmp_path / "junk.json").write_text("{}")
  with pytest.raises(errors.ExportError, match="junk: not a serialised jax.export"):
    wavejax_export.load_stablehlo(tmp_path / "junk")


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "wavejax.export", *args], cwd=REPO,
                        capture_output=True, text=True)


def test_cli(cnn_run, tmp_path):
  out = tmp_path / "exported" / "model.stablehlo"
  result = run_cli(f"--workdir={cnn_run}", "--format=stablehlo", f"--out={out}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert str(out) in result.stdout
  info = json.loads(wavejax_export.sidecar_path(out).read_text())
  assert info["model"] == "simplenet_cnn" and info["fold"] == FOLD
  assert jax.export.deserialize(bytearray(out.read_bytes())).in_avals[0].shape[1] == (
      info["num_samples"])

  result = run_cli(f"--workdir={tmp_path / 'nowhere'}", "--format=onnx", f"--out={out}")
  assert result.returncode == 1
  error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
  assert error_lines == [f"wavejax: error: {tmp_path / 'nowhere'}: no such run folder; pass the "
                         "--workdir of a training run"]
