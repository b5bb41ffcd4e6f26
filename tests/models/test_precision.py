"""`config.model.matmul_precision` reaches every matmul and convolution of every zoo model, in
the forward pass and the gradient (custom gradients included), from the module alone."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavejax import config as wavejax_config
from wavejax import errors
from wavejax.models import MODELS, create_model

CLIP = 4000  # 0.25 s at 16 kHz: six 40 ms windows
OPS = re.compile(r"stablehlo\.(dot_general|convolution)\b[^\n]*")
PRECISION = re.compile(r"precision(?:_config)? = \[([^\]]*)\]")


def lowered_train_step(name: str, precision: str) -> str:
  """StableHLO of a zoo model's loss and parameter gradient in training mode."""
  config = wavejax_config.get_config(name)
  config.model.matmul_precision = precision
  model = create_model(config.model, num_classes=4)
  x = jnp.zeros((2, CLIP), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)

  def loss(params, batch_stats):
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                            rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
    return jnp.sum(logits**2)

  step = jax.jit(jax.value_and_grad(loss))
  return step.lower(variables["params"], variables.get("batch_stats", {})).as_text()


def precisions(text: str) -> list[tuple[str, str]]:
  """(op, its operand precisions or "" when it has none) of every dot_general / convolution."""
  found = []
  for match in OPS.finditer(text):
    attribute = PRECISION.search(match.group(0))
    found.append((match.group(1), attribute.group(1) if attribute else ""))
  return found


@pytest.mark.parametrize("name", sorted(MODELS))
def test_highest_reaches_every_product_of_the_forward_and_gradient(name):
  ops = precisions(lowered_train_step(name, "highest"))
  assert len(ops) >= 4, ops  # a forward and a gradient product at least
  for op, operands in ops:
    assert operands and all("HIGHEST" in p for p in operands.split(",")), (op, operands)


def test_default_leaves_the_backend_its_fast_products():
  ops = precisions(lowered_train_step("simplenet_cnn", "default"))
  assert ops and not any("HIGH" in operands for _, operands in ops), ops


def test_high_on_the_paper_model_and_a_bad_value():
  ops = precisions(lowered_train_step("simplenet_rnn", "high"))
  assert ops and all(operands and "HIGHEST" not in operands and "HIGH" in operands
                     for _, operands in ops), ops
  config = wavejax_config.get_config("simplenet_cnn")
  config.model.matmul_precision = "fast"
  with pytest.raises(errors.ConfigError, match="matmul_precision"):
    create_model(config.model, num_classes=4)


def test_highest_gives_float32_products_on_any_backend():
  """The front-end's energies with `highest` match float64 numpy to float32 rounding."""
  config = wavejax_config.get_config("simplenet_cnn")
  config.model.matmul_precision = "highest"
  model = create_model(config.model, num_classes=4)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 1280)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  energy = model.apply(variables, x, method=lambda module, w: module.frontend(w))
  kernel = np.asarray(variables["params"]["frontend"]["kernel"], np.float64)
  windows = np.asarray(x, np.float64).reshape(2, 2, 640)
  padded = np.pad(windows, ((0, 0), (0, 0), (127, 128)))
  y = np.stack([[[np.correlate(w, kernel[:, f], "valid") for f in range(64)] for w in row]
                for row in padded])
  expected = np.log(np.abs(y).mean(axis=-1) + 1e-6)
  np.testing.assert_allclose(np.asarray(energy), expected, rtol=2e-5, atol=2e-5)
