"""config.model.compute_dtype="bfloat16": products in bfloat16, everything that accumulates in
float32; the outputs, gradients and a short training run stay close to float32's."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from wavejax import config as wavejax_config
from wavejax import errors, training
from wavejax.models import create_model
from wavejax.training import steps

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

SAMPLES = 8000
# bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2 %); the errors of a few layers
# add up to about 1 %.
LOGIT_TOLERANCE = 0.03


def model_config(name, dtype):
  config = importlib.import_module(f"configs.{name}").get_config()
  config.model.compute_dtype = dtype
  return wavejax_config.resolve(config)


def state_and_batch(name, dtype):
  config = model_config(name, dtype)
  model = create_model(config.model, num_classes=4)
  state = steps.create_train_state(model, config, SAMPLES, 1, fold=1)
  rng = np.random.default_rng(0)
  batch = {"waveforms": jnp.asarray(rng.uniform(-0.3, 0.3, (4, SAMPLES)), jnp.float32),
           "labels": jnp.asarray(rng.integers(0, 4, 4), jnp.int32), "weights": jnp.ones(4)}
  return model, state, batch


def outputs_gradients_statistics(state, batch):
  """Eval-mode logits, the gradient of the eval-mode loss, and the training-mode batch norm
  statistics update, in one compiled program."""
  def loss(params):
    logits = state.apply_fn(state.variables(params), batch["waveforms"], train=False)
    return steps.cross_entropy(logits, batch["labels"], batch["weights"]), logits

  (_, logits), gradients = jax.value_and_grad(loss, has_aux=True)(state.params)
  _, updates = state.apply_fn(state.variables(), batch["waveforms"], train=True,
                              rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
  return logits, gradients, updates["batch_stats"]


def cosine(a, b) -> float:
  a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)])
  b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)])
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# Cosines of the bfloat16 gradient to the float32 one, measured at this size: the head's 0.97-0.99;
# the front-end's 0.98 (SimpleNet-RNN) down to 0.85-0.86 (SimpleNet-CNN, SincNet), whose gradient
# comes back through the head's batch norms (their backward subtracts nearly equal terms, which
# amplifies bfloat16's rounding). A broken cast or a lost gradient gives ~0 or NaN.
@pytest.mark.parametrize("name", ["simplenet_cnn", "simplenet_rnn", "soundnet", "sincnet"])
def test_bfloat16_outputs_and_gradients_match_float32(name):
  outputs, gradients = {}, {}
  for dtype in ("float32", "bfloat16"):
    _, state, batch = state_and_batch(name, dtype)
    outputs[dtype], gradients[dtype], statistics = jax.jit(outputs_gradients_statistics)(
        state, batch)
    assert {leaf.dtype for leaf in jax.tree.leaves(gradients[dtype])} == {jnp.dtype("float32")}
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(statistics))
  outputs = {k: np.asarray(v) for k, v in outputs.items()}
  assert outputs["bfloat16"].dtype == np.float32
  scale = np.abs(outputs["float32"]).max()
  assert np.abs(outputs["bfloat16"] - outputs["float32"]).max() <= LOGIT_TOLERANCE * scale
  assert not np.array_equal(outputs["bfloat16"], outputs["float32"])  # really ran in bfloat16
  assert cosine(gradients["bfloat16"]["head"], gradients["float32"]["head"]) > 0.95
  assert cosine(gradients["bfloat16"]["frontend"], gradients["float32"]["frontend"]) > 0.8


def test_a_short_bfloat16_training_run_follows_float32(tmp_path):
  histories = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(tmp_path, **{"model.compute_dtype": dtype, "train.num_epochs": 2})
    histories[dtype] = training.train_fold(config, 1).history
  losses32 = np.array([r["train_loss"] for r in histories["float32"]])
  losses16 = np.array([r["train_loss"] for r in histories["bfloat16"]])
  assert losses32[-1] < losses32[0] and losses16[-1] < losses16[0]
  np.testing.assert_allclose(losses16, losses32, rtol=0.05)
  accuracies = [r["train_running_acc"] for h in histories.values() for r in h[-1:]]
  # Running accuracies over the tiny fold's 48 training utterances: two runs that differ only in
  # rounding differ by about one binomial std of a difference, sqrt(2 x 0.25 / 48) = 0.10, so
  # allow two; the loss curves above are the tight check.
  assert abs(accuracies[0] - accuracies[1]) <= 2 * np.sqrt(2 * 0.25 / 48)


def test_unknown_or_unsupported_compute_dtypes_are_config_errors():
  with pytest.raises(errors.ConfigError, match="compute_dtype"):
    create_model(model_config("simplenet_cnn", "float16").model, num_classes=4)
  with pytest.raises(errors.ConfigError, match="LEAF"):
    create_model(model_config("leaf", "bfloat16").model, num_classes=4)
