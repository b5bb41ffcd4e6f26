r"""A trained run as a file that runs without wavejax (`python -m wavejax.export` is its command).

  python -m wavejax.export --workdir=RUN [--fold=k] --format=stablehlo|onnx --out=F \
      [--batch_size=N]

writes F, the run's best model (`wavejax.load_model`) in inference mode as one function from raw
mono waveforms at the run's sample rate, `[batch, samples]` float32 with `samples` the run's clip
length (pad or cut longer and shorter audio first, as `LoadedModel.probabilities` does), to class
probabilities `[batch, classes]` (softmax), and beside it `F.json`: the class names in output
order, the sample rate, the clip length, the model name, the fold, the epoch and the input and
output shapes.

  stablehlo  `jax.export` serialised bytes; reload with JAX alone:
             `jax.export.deserialize(open(F, "rb").read()).call(waveforms)`, or
             `fn, metadata = wavejax.export.load_stablehlo(F)`. Lowered for CPU, CUDA, ROCm and
             TPU (`PLATFORMS`). The batch dimension is symbolic (any batch size) unless
             `--batch_size` fixes it.
  onnx       through jax2onnx (`pip install 'wavejax[onnx]'`); the metadata are also the model's
             `metadata_props` (each value JSON text). The batch dimension is FIXED: `--batch_size`
             (default 1) examples per call, since jax2onnx cannot carry a symbolic batch through
             these models' padding. Run with onnxruntime:
             `onnxruntime.InferenceSession(F).run(None, {"waveforms": x})[0]`.

The function is traced in float32 under the highest matmul precision (a bfloat16 run is exported
in float32), and the SimpleNet and SincNet front-ends use their "conv" method whatever the run was
trained with: the same windowed filter as one convolution, which every platform and ONNX have and
which, unlike the CPU's blocked Toeplitz products, does not depend on the batch size.

A model whose ops the format cannot express fails with one line naming the op (e.g. an op
jax2onnx has no conversion for), as does a model whose code needs a fixed batch size.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging as std_logging
import pathlib
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.extend import core as jax_core

import wavejax
from wavejax import atomic, errors
from wavejax.inference import model as loaded_model
from wavejax.models import create_model

FORMATS = ("stablehlo", "onnx")
# Platforms a StableHLO export runs on (lowering for a platform needs none of its devices).
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
INPUT_NAME, OUTPUT_NAME = "waveforms", "probabilities"
ONNX_OPSET = 21
# An ONNX export whose onnxruntime probabilities differ more than this from JAX's is refused.
ONNX_CHECK_TOLERANCE = 1e-3
_MISSING_PRIMITIVE = re.compile(r"No plugins registered for primitive '([^']+)'")


def sidecar_path(path) -> pathlib.Path:
  """Where the metadata of the export at `path` go: `path` + ".json"."""
  path = pathlib.Path(path)
  return path.with_name(path.name + ".json")


def inference_function(loaded: loaded_model.LoadedModel) -> Callable[[jax.Array], jax.Array]:
  """`[B, samples]` float32 waveforms -> `[B, classes]` probabilities of the loaded model, in
  inference mode, computed in float32 with the front-end's portable "conv" method."""
  config = loaded.config.model.copy_and_resolve_references()
  config.compute_dtype = "float32"
  if "method" in config.frontend:
    config.frontend.method = "conv"
  model = create_model(config, num_classes=len(loaded.classes))
  variables = loaded.variables

  def probabilities(waveforms):
    return jax.nn.softmax(model.apply(variables, waveforms, train=False), axis=-1)

  return probabilities


def metadata(loaded: loaded_model.LoadedModel, export_format: str,
             batch_size: int | None) -> dict[str, Any]:
  """What a user needs to feed the exported function and read its output."""
  return {
      "format": export_format,
      "model": loaded.config.model.name,
      "classes": list(loaded.classes),
      "sample_rate": loaded.sample_rate,
      "clip_seconds": loaded.clip_seconds,
      "num_samples": loaded.num_samples,
      "fold": loaded.fold,
      "epoch": loaded.epoch,
      "workdir": str(loaded.workdir),
      "input": {"name": INPUT_NAME, "shape": [batch_size, loaded.num_samples],
                "dtype": "float32"},
      "output": {"name": OUTPUT_NAME, "shape": [batch_size, len(loaded.classes)],
                 "dtype": "float32"},
      "batch_size": batch_size,
      "wavejax_version": wavejax.__version__,
      "jax_version": jax.__version__,
  }


def _check_batch_size(batch_size: int | None) -> None:
  if batch_size is not None and batch_size < 1:
    raise errors.ExportError(f"--batch_size={batch_size}: pass a positive batch size, or omit it")


def _input_spec(loaded: loaded_model.LoadedModel, batch_size: int | None) -> jax.ShapeDtypeStruct:
  batch = jax.export.symbolic_shape("b")[0] if batch_size is None else batch_size
  return jax.ShapeDtypeStruct((batch, loaded.num_samples), jnp.float32)


def export_stablehlo(loaded: loaded_model.LoadedModel, path, batch_size: int | None = None,
                     platforms=PLATFORMS) -> dict[str, Any]:
  """Writes the model as serialised `jax.export` bytes to `path` and its metadata to
  `sidecar_path(path)`; returns the metadata.

  Args:
    loaded: from `wavejax.load_model`.
    path: the output file.
    batch_size: None for a symbolic batch dimension (any batch size), else a fixed one.
    platforms: the platforms the export can run on.

  Raises:
    errors.ExportError: when the model cannot be exported (e.g. its code needs a fixed batch size).
    WriteError: when `path` or its sidecar cannot be written.
  """
  _check_batch_size(batch_size)
  name = loaded.config.model.name
  function = jax.jit(inference_function(loaded))
  try:
    with jax.default_matmul_precision("highest"):
      exported = jax.export.export(function, platforms=tuple(platforms))(
          _input_spec(loaded, batch_size))
  except jax_core.InconclusiveDimensionOperation as e:
    raise errors.ExportError(
        f"stablehlo export of {name}: the model's code needs a fixed batch size "
        f"({errors.one_line(e).split('. ')[0]}); pass --batch_size=N") from e
  info = {**metadata(loaded, "stablehlo", batch_size), "platforms": list(exported.platforms)}
  atomic.atomic_write(path, bytes(exported.serialize()))
  atomic.atomic_write(sidecar_path(path), json.dumps(info, indent=2) + "\n")
  return info


def load_stablehlo(path) -> tuple[Callable[[jax.Array], jax.Array], dict[str, Any]]:
  """A StableHLO export and its metadata: `(probabilities_fn, metadata)`.

  `probabilities_fn` maps `[B, metadata["num_samples"]]` float32 waveforms at
  `metadata["sample_rate"]` to `[B, len(metadata["classes"])]` probabilities on the default
  device (any B when `metadata["batch_size"]` is None). Needs only JAX, not the training code.

  Raises:
    errors.ExportError: when the file or its sidecar is missing or is not such an export.
  """
  path = pathlib.Path(path)
  try:
    blob = path.read_bytes()
    info = json.loads(sidecar_path(path).read_text())
  except OSError as e:
    raise errors.ExportError(f"{e.filename or path}: cannot read ({e.strerror or e}); pass a file "
                      "written by python -m wavejax.export --format=stablehlo and its .json "
                      "beside it") from e
  except ValueError as e:
    raise errors.ExportError(f"{sidecar_path(path)}: not JSON ({e}); export the model again") from e
  try:
    exported = jax.export.deserialize(bytearray(blob))
  except Exception as e:  # the flatbuffer reader raises assorted types on foreign bytes
    raise errors.ExportError(f"{path}: not a serialised jax.export module ({type(e).__name__}); "
                             "pass a "
                      "file written by python -m wavejax.export --format=stablehlo") from e
  return jax.jit(exported.call), info


def _drop_unused(closed: jax_core.ClosedJaxpr) -> jax_core.ClosedJaxpr:
  """`closed` without the top-level equations whose results nothing uses (e.g. the PRNG key
  `flax.linen.RNN` makes for a carry initialiser that needs none), so they need no conversion."""
  jaxpr = closed.jaxpr
  live = {v for v in jaxpr.outvars if isinstance(v, jax_core.Var)}
  kept = []
  for eqn in reversed(jaxpr.eqns):
    if eqn.effects or any(v in live for v in eqn.outvars):
      kept.append(eqn)
      live.update(v for v in eqn.invars if isinstance(v, jax_core.Var))
  pruned = jax_core.Jaxpr(jaxpr.constvars, jaxpr.invars, jaxpr.outvars, kept[::-1], jaxpr.effects,
                          debug_info=jaxpr.debug_info)
  return jax_core.ClosedJaxpr(pruned, closed.consts)


def _onnx_modules():
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.ExportError(f"--format=onnx needs jax2onnx and onnxruntime ({e.name} is missing): "
                      "pip install 'wavejax[onnx]'") from e
  return jax2onnx, onnxruntime


def to_onnx(function: Callable, spec: jax.ShapeDtypeStruct, name: str):
  """The ONNX `ModelProto` of `function` (one float32 input of shape `spec`, one output).

  The function is traced to a jaxpr by JAX first and jax2onnx converts that jaxpr's primitives,
  so the graph holds exactly the ops JAX runs (jax2onnx's own tracing replaces `jnp.shape` and
  breaks `flax.linen.RNN`, and would convert a different function for each jnp function it maps).

  Raises:
    errors.ExportError: naming the op when jax2onnx cannot convert one, or when it fails otherwise.
  """
  jax2onnx, _ = _onnx_modules()
  version = importlib.metadata.version("jax2onnx")
  with jax.default_matmul_precision("highest"):
    closed = _drop_unused(jax.make_jaxpr(function)(spec))
  traced = jax_core.jaxpr_as_fun(closed)
  try:
    return jax2onnx.to_onnx(lambda x: traced(x)[0], [spec], model_name=name, opset=ONNX_OPSET,
                            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
  except Exception as e:  # jax2onnx raises assorted types on graphs it cannot convert
    missing = _MISSING_PRIMITIVE.search(str(e))
    if missing:
      raise errors.ExportError(f"onnx export of {name}: the JAX op '{missing.group(1)}' has "
                               "no ONNX "
                        f"conversion in jax2onnx {version}; use --format=stablehlo") from e
    raise errors.ExportError(f"onnx export of {name}: jax2onnx {version} failed "
                      f"({type(e).__name__}: {errors.one_line(e)[:300]}); use --format=stablehlo"
                      ) from e


def _check_onnx(onnxruntime, blob: bytes, function: Callable, spec: jax.ShapeDtypeStruct,
                name: str) -> float:
  """Runs the ONNX model in onnxruntime on seeded noise; returns its largest difference from
  JAX's probabilities, or raises errors.ExportError when it is over `ONNX_CHECK_TOLERANCE`."""
  waveforms = 0.1 * np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3  # errors only: not its notes on initialisers it prunes
  try:
    session = onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: waveforms})[0]
  except Exception as e:  # onnxruntime's own exception types
    raise errors.ExportError(f"onnx export of {name}: onnxruntime cannot run the converted graph "
                      f"({errors.one_line(e)[:300]}); use --format=stablehlo") from e
  with jax.default_matmul_precision("highest"):
    expected = np.asarray(jax.jit(function)(waveforms))
  difference = float(np.max(np.abs(got - expected)))
  if not difference <= ONNX_CHECK_TOLERANCE:
    raise errors.ExportError(f"onnx export of {name}: onnxruntime's probabilities differ from "
                             "JAX's by "
                      f"{difference:.3g} on a test input; use --format=stablehlo")
  return difference


def export_onnx(loaded: loaded_model.LoadedModel, path, batch_size: int | None = None
                ) -> dict[str, Any]:
  """Writes the model as an ONNX file (batch dimension fixed at `batch_size`, default 1) to
  `path` and its metadata to `sidecar_path(path)` and into the model's `metadata_props`;
  returns the metadata.

  Raises:
    errors.ExportError: when jax2onnx or onnxruntime is missing, when the model has an op jax2onnx
      cannot convert, or when onnxruntime does not reproduce JAX's probabilities.
    WriteError: when `path` or its sidecar cannot be written.
  """
  _check_batch_size(batch_size)
  _, onnxruntime = _onnx_modules()
  batch_size = batch_size or 1
  name = loaded.config.model.name
  function = inference_function(loaded)
  spec = _input_spec(loaded, batch_size)
  model = to_onnx(function, spec, name)
  info = {**metadata(loaded, "onnx", batch_size),
          "jax2onnx_version": importlib.metadata.version("jax2onnx"), "opset": ONNX_OPSET}
  for key, value in info.items():
    model.metadata_props.add(key=key, value=json.dumps(value))
  blob = model.SerializeToString()
  difference = _check_onnx(onnxruntime, blob, function, spec, name)
  logging.info("onnx export of %s: onnxruntime within %.3g of JAX", name, difference)
  atomic.atomic_write(path, blob)
  atomic.atomic_write(sidecar_path(path), json.dumps(info, indent=2) + "\n")
  return info


def export(loaded: loaded_model.LoadedModel, export_format: str, path,
           batch_size: int | None = None) -> dict[str, Any]:
  """`export_stablehlo` or `export_onnx` by name."""
  if export_format not in FORMATS:
    raise errors.ExportError(f"--format={export_format}: choose one of {', '.join(FORMATS)}")
  if export_format == "onnx":
    return export_onnx(loaded, path, batch_size)
  return export_stablehlo(loaded, path, batch_size)


@contextlib.contextmanager
def quiet_converter_logs():
  """jax2onnx warns, with tracebacks, about its plugins for other libraries that do not import."""
  logger = std_logging.getLogger("jax2onnx")
  level = logger.level
  logger.setLevel(std_logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)
