"""wavejax.perf.flops: FLOPs of a jaxpr against known counts and against XLA's own estimate."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from wavejax import config as wavejax_config
from wavejax import perf
from wavejax.models import create_model
from wavejax.training import steps


def test_jaxpr_flops_counts_matmuls_convolutions_and_scan_steps():
  a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
  assert perf.jaxpr_flops(jax.make_jaxpr(jnp.matmul)(a, b).jaxpr) == 2 * 8 * 16 * 4
  xs = jnp.ones((5, 16, 16))
  scanned = lambda c, xs: jax.lax.scan(lambda c, x: (c @ x, None), c, xs)[0]
  assert perf.jaxpr_flops(jax.make_jaxpr(scanned)(a, xs).jaxpr) == 5 * 2 * 8 * 16 * 16
  x, k = jnp.ones((2, 3, 20)), jnp.ones((6, 3, 5))  # NCH, OIH
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1,), "VALID")
  assert perf.jaxpr_flops(jax.make_jaxpr(conv)(x, k).jaxpr) == 2 * (2 * 6 * 16) * 3 * 5


def test_grouped_convolution_counts_the_features_of_its_group():
  x, k = jnp.ones((2, 4, 20)), jnp.ones((6, 2, 5))  # 2 groups of 2 input features
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1,), "VALID", feature_group_count=2)
  assert perf.function_flops(conv, x, k) == 2 * (2 * 6 * 16) * 2 * 5


def test_nested_jit_cond_and_gradient():
  a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
  inner = jax.jit(lambda a, b: a @ b)
  assert perf.function_flops(lambda a, b: inner(a, b) + inner(a, b), a, b) == 2 * 2 * 8 * 16 * 4
  # cond: the costlier branch (a matmul, not the zeros).
  pick = lambda p, a, b: jax.lax.cond(p, lambda: a @ b, lambda: jnp.zeros((8, 4)))
  assert perf.function_flops(pick, True, a, b) == 2 * 8 * 16 * 4
  # The gradient of sum(a @ b) with respect to a is one more product of the same size.
  grad = jax.grad(lambda a, b: jnp.sum(a @ b))
  assert perf.function_flops(grad, a, b) == 2 * 2 * 8 * 16 * 4
  # ShapeDtypeStructs trace as well as arrays; a ClosedJaxpr counts as its jaxpr.
  spec = jax.ShapeDtypeStruct((8, 16), jnp.float32), jax.ShapeDtypeStruct((16, 4), jnp.float32)
  assert perf.function_flops(jnp.matmul, *spec) == 2 * 8 * 16 * 4
  assert perf.jaxpr_flops(jax.make_jaxpr(jnp.matmul)(a, b)) == 2 * 8 * 16 * 4


def test_pallas_kernel_counts_once_per_program():
  def kernel(x_ref, y_ref, o_ref):
    o_ref[...] = jnp.dot(x_ref[...], y_ref[...])

  product = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((32, 8), jnp.float32), grid=(4,),
      in_specs=[pl.BlockSpec((8, 16), lambda i: (i, 0)), pl.BlockSpec((16, 8), lambda i: (0, 0))],
      out_specs=pl.BlockSpec((8, 8), lambda i: (i, 0)), interpret=True)
  x, y = jnp.ones((32, 16)), jnp.ones((16, 8))
  assert perf.function_flops(product, x, y) == 4 * 2 * 8 * 16 * 8  # = 2 * 32 * 16 * 8


def test_xla_cost_flops_of_a_matmul_on_cpu():
  cpu = jax.devices("cpu")[0]
  a, b = (jax.device_put(jnp.ones(shape), cpu) for shape in ((8, 16), (16, 4)))
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  assert perf.xla_cost_flops(compiled) == 2 * 8 * 16 * 4


def test_train_step_flops_agree_with_xla_without_loops():
  """SimpleNet-CNN with the direct convolution has no loop: XLA's count (which adds elementwise
  work) and the jaxpr count of its matmuls and convolutions agree to a few percent. Compiled for
  the CPU, whose cost analysis is the one this holds for, on any default backend."""
  cpu = jax.devices("cpu")[0]
  config = wavejax_config.get_config("simplenet_cnn")
  wavejax_config.set_field(config, "model.frontend.method", "conv")
  model = create_model(config.model, num_classes=4)
  waveforms = np.zeros((2, 8000), np.float32)  # 0.5 s: 12 windows
  with jax.default_device(cpu):
    state = steps.create_train_state(model, config, waveforms.shape[1], steps_per_epoch=1, fold=1)
    batch = {"waveforms": jnp.asarray(waveforms), "labels": jnp.zeros((2,), jnp.int32),
             "weights": jnp.ones((2,), jnp.float32)}
  state, batch = jax.device_put((state, batch), cpu)
  step = lambda state, batch: steps.train_step(state, batch,
                                               double_softmax=config.train.double_softmax)
  counted = perf.function_flops(step, state, batch)
  xla = perf.xla_cost_flops(jax.jit(step).lower(state, batch).compile())
  # Front-end forward + kernel gradient dominate: 2 x 2 x 12 windows x 640 x 256 x 64.
  assert counted > 2 * 2 * 12 * 640 * 256 * 64
  assert 0.95 * xla < counted <= xla
