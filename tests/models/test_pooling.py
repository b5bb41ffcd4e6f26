"""wavejax.models.layers.max_pool: flax's max pooling (stride = window), values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavejax import errors
from wavejax.models.layers import max_pool

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

CASES = [((2, 9, 7, 3), (2, 2), "SAME"), ((2, 9, 7, 3), (2, 3), "VALID"),
         ((3, 1001, 5), (8,), "SAME"), ((3, 1001, 5), (8,), "VALID"), ((4, 64, 2), (2,), "VALID"),
         ((2, 13, 4), (4,), "SAME"), ((1, 5, 6, 2), (3, 3), "SAME")]


@pytest.mark.parametrize("shape, window, padding", CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_flax(shape, window, padding, dtype):
  rng = np.random.default_rng(len(shape) + sum(window))
  # Small integers after a ReLU: many ties, the case where the gradient's routing matters.
  x = jax.nn.relu(jnp.asarray(rng.integers(-3, 4, shape), dtype))
  reference = lambda x: nn.max_pool(x, window, strides=window, padding=padding)
  expected = reference(x)
  weights = jnp.asarray(rng.standard_normal(expected.shape), dtype)
  np.testing.assert_array_equal(max_pool(x, window, padding), expected)
  grad = jax.grad(lambda x: jnp.sum(max_pool(x, window, padding) * weights))(x)
  grad_ref = jax.grad(lambda x: jnp.sum(reference(x) * weights))(x)
  np.testing.assert_array_equal(grad, grad_ref)
  # Every output's cotangent lands on exactly one input of its window.
  assert int(jnp.sum(grad != 0)) == int(jnp.sum(weights != 0))


def test_gradient_under_jit_and_vmap():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2, 10, 4)), jnp.float32)
  pool = lambda v: jnp.sum(max_pool(v, (2,), "VALID") ** 2)
  grad = jax.jit(jax.vmap(jax.grad(pool)))(x)
  expected = jax.vmap(jax.grad(lambda v: jnp.sum(
      nn.max_pool(v, (2,), strides=(2,), padding="VALID") ** 2)))(x)
  np.testing.assert_allclose(grad, expected, rtol=1e-6)


@pytest.mark.parametrize("window, padding", [((2,), "FULL"), ((0,), "VALID"), ((2, 2), "SAME")])
def test_bad_settings_are_config_errors(window, padding):
  with pytest.raises(errors.ConfigError, match="max pooling"):
    max_pool(jnp.zeros((1, 8, 2)), window, padding)
