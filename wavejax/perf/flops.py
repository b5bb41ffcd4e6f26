"""FLOPs of a traced function: its matrix products and convolutions, loops times their length.

`jaxpr_flops` walks a jaxpr and counts 2 x multiply-adds of every `dot_general` and
`conv_general_dilated`, recursing into sub-jaxprs: a `scan` body counts `length` times, a `cond`
its costliest branch, a `pallas_call` kernel once per program of its grid, anything else (jit,
custom_jvp / custom_vjp forward, checkpoint, a `while` body) once. Elementwise work is left out:
the count is the useful work a matrix unit does, the figure to hold against a matmul peak.

XLA's own estimate (`xla_cost_flops`, from `compiled.cost_analysis()`) includes elementwise work
but counts a loop body once (a 10-step `lax.scan` as 1 step), so it undercounts scanned
formulations and recurrent models; on a loop-free step the two agree to a few percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax
from jax.extend import core as jax_core


def jaxpr_flops(jaxpr) -> float:
  """FLOPs of the matrix products and convolutions of `jaxpr` (a `Jaxpr` or `ClosedJaxpr`)."""
  if isinstance(jaxpr, jax_core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  return sum(_equation_flops(eqn) for eqn in jaxpr.eqns)


def function_flops(fn: Callable, *args, **kwargs) -> float:
  """`jaxpr_flops` of `fn` traced on `args` (arrays or `jax.ShapeDtypeStruct`s)."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)


def _equation_flops(eqn) -> float:
  name = eqn.primitive.name
  if name == "dot_general":
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)
  if name == "conv_general_dilated":
    # Per output element: every input feature of its group x kernel tap.
    rhs = eqn.invars[1].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / out_features
  inner = [jaxpr_flops(sub) for sub in _sub_jaxprs(eqn.params)]
  if name == "scan":
    return eqn.params["length"] * sum(inner)
  if name == "cond":
    return max(inner, default=0.0)
  if name == "pallas_call":
    return _grid_size(eqn.params) * sum(inner)
  return sum(inner)  # jit, custom_jvp_call, custom_vjp_call, checkpoint, ...; a while body once


def _grid_size(params: dict) -> int:
  """Programs a `pallas_call` launches (1 where the grid cannot be read)."""
  grid = getattr(params.get("grid_mapping"), "grid", ())
  return math.prod(size for size in grid if isinstance(size, int))


def _sub_jaxprs(params: dict) -> Iterator:
  """The jaxprs among an equation's parameters (a tuple of branches included)."""
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax_core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax_core.Jaxpr):
        yield item


def xla_cost_flops(compiled) -> float | None:
  """XLA's FLOP estimate of a compiled executable (a loop body counted once); None when the
  backend gives none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except (some backends do not implement it)
    return None
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None
