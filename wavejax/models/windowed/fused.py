"""Per-window filter energies in one fused Pallas (Triton) kernel: no `[N, L, F]` in memory.

  out[n, f] = mean_{t < L} | act( sum_{k < K} frames[n, t + k] * kernel[k, f] + bias[f] ) |

The other formulations of `windowed.filter_energy` write every output y[n, t, f] to memory and
read it back for |act(y)| and the window mean (at the paper's shape, L = 640, K = 256, F = 64,
that is 24.6 MB per 6 s utterance in float32), so on a GPU they run at the memory's rate, far
below the matrix units'. Here the operand of each product is gathered on chip from the window's
samples, multiplied on the matrix units (float32 accumulation), passed through act and |.| and
summed: per window only F numbers (in 16-row partial sums) leave the chip.

Layout (polyphase, P = `phases`): the L outputs of a window are P interleaved phases of
ceil(L / P) outputs. Operand row u holds samples P*u ... P*u + C - 1 (C >= K + P - 1), and
output P*u + r is that row times the kernel shifted down by r rows (W_r[j] = kernel[j - r]),
so one gathered `[block_rows, C]` operand serves P products `[block_rows, C] @ [C, F]`. The
rows of every window are stacked (ceil(L / P) padded to 16 per window) and cut into tiles of
`block_rows`, whatever the window boundaries. With P > 1 each operand row starts at a multiple of
P samples, so its loads are aligned vectors (P = 8: 16 bytes of bfloat16), and the number of
gathered samples drops from K to C / P per output; the multiply-adds grow by C / K (6 % at the
paper's shape: C = 272). P = 1 is plain im2col. The weight operand stays `[C, F]` per phase
(34 KB in bfloat16), where the block-Toeplitz form's banded weight is `[P + K, P * F]`.

The backward (a `jax.custom_vjp`) recomputes y on chip instead of storing it, takes
s = d|act(y)|/dy from it and accumulates the kernel gradient
dkernel[k, f] = sum_n sum_t frames[n, t + k] * g[n, f] * s[n, t, f] / L: one program per tile
range, phase and filter block computes dW_r = A^T @ G_r (G = s * g / L) into a `[C, F]` float32
partial; outside, the partials are summed and folded, dkernel[k] = sum_r dW_r[k + r]. The bias
gradient is the sum of G. The frames gradient (the first layer's input gradient, rarely wanted)
is not fused: it comes from the "toeplitz" method's VJP, and only when the frames are
differentiated. The backward has its own layout options (`grad_*`).

Padding: windows to whole programs, filters to `block_filters` and the contraction to blocks of
`block_taps` (powers of two, >= 16: Triton's block shapes and dot) with zero kernel rows and
columns; outputs past L are masked out of the energy and the gradient. Every shape the other
methods accept tiles; `supported` says when K is too long and the "toeplitz" method is used.

`interpret=None` runs Pallas' interpreter on backends other than "gpu" (CPU tests), the compiled
Triton kernel on a GPU. float32 products honour `precision` (HIGHEST: full float32, anything
lower: TF32 on the matrix units); with `precision=None` the `jax.default_matmul_precision`
setting applies, DEFAULT (TF32) without one. bfloat16 products when frames and kernel are both
bfloat16, float32 accumulation either way.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from absl import logging
from jax import lax
from jax.experimental import pallas as pl

from wavejax import errors
from wavejax.models.windowed.common import ACTIVATIONS
from wavejax.models.windowed.toeplitz import toeplitz_energy

try:  # Only the compiled (GPU) path needs the Triton-specific module.
  from jax.experimental.pallas import triton as _plgpu
except ImportError:  # pragma: no cover - depends on the jaxlib build
  _plgpu = None


# Longest contraction K + P - 1 the kernel takes; longer kernels use the "toeplitz" method (the
# backward keeps a `[K + P - 1, filters]` float32 accumulator per program).
MAX_CONTRACTION = 4096
# Contraction above which the polyphase operand is not reused across phases (P = 1).
_MAX_PHASED_CONTRACTION = 512
# Float32 elements of the backward's kernel-gradient accumulator that filter blocks are sized to.
_ACCUMULATOR_ELEMENTS = 32768
# Backward programs (over rows, phases and filter blocks) that the row tiles are spread over:
# each writes a `[K + P - 1, block_filters]` float32 partial, summed outside.
_GRAD_PROGRAMS = 512
_DOT_MIN = 16  # Triton's dot wants every dimension >= 16.
_GROUP = 16  # rows per partial sum written by the forward (rows per window are padded to it)


@dataclasses.dataclass(frozen=True)
class TileOptions:
  """How the kernel tiles the work; block sizes and phases are powers of two.

  Attributes:
    phases: P, outputs per operand row (polyphase): row u of a window holds samples
      P*u ... P*u + K + P - 2, and phase r < P of it gives output P*u + r through the kernel
      shifted down by r rows. P > 1 shares one gathered operand among P products and aligns
      its rows to P samples (vector loads); the contraction grows from K to K + P - 1.
    block_rows: operand rows per dot (>= 16).
    block_taps: contraction per dot (>= 16); the last block is the remainder, rounded up.
    block_filters: filters per program (>= 16); F is padded to a multiple.
    tiles_per_program: row tiles one forward program loops over.
    num_warps, num_stages: Triton's settings for the forward kernel.
    grad_*: the same for the backward kernel, whose programs each handle one phase and write a
      `[K + P - 1, block_filters]` float32 partial of the kernel gradient, summed outside;
      grad_tiles_per_program=None: enough tiles per program for about 512 programs.
  """
  phases: int = 8
  block_rows: int = 64
  block_taps: int = 128
  block_filters: int = 64
  tiles_per_program: int = 1
  num_warps: int = 4
  num_stages: int = 2
  grad_phases: int = 8
  grad_block_rows: int = 64
  grad_block_taps: int = 128
  grad_tiles_per_program: int | None = None
  grad_num_warps: int = 4
  grad_num_stages: int = 2

  @classmethod
  def create(cls, **options) -> TileOptions:
    """Validated options; raises `errors.ConfigError` on an unknown name or a bad value."""
    names = {field.name for field in dataclasses.fields(cls)}
    for name, value in options.items():
      if name not in names:
        raise errors.ConfigError(
            f"fused_filter_energy tile option {name!r}: choose from {sorted(names)}")
      if value is None and name == "grad_tiles_per_program":
        continue
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise errors.ConfigError(
            f"fused_filter_energy tile option {name}={value!r}: must be a positive int")
      if "block_" in name and (value < _DOT_MIN or value & (value - 1)):
        raise errors.ConfigError(
            f"fused_filter_energy tile option {name}={value}: must be a power of two >= 16")
      if name.endswith("phases") and value & (value - 1):
        raise errors.ConfigError(
            f"fused_filter_energy tile option {name}={value}: must be a power of two")
    return cls(**options)


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Static layout of one call (hashable: a `custom_vjp` non-differentiable argument)."""
  length: int  # L
  taps: int  # K
  filters: int  # F
  activation: str
  precision: lax.Precision
  interpret: bool
  tiles: TileOptions
  phases: int  # P
  chunks: tuple[tuple[int, int], ...]  # (start, size) blocks of the contraction
  block_rows: int  # M
  block_filters: int  # BF
  num_warps: int
  num_stages: int

  @property
  def contraction(self) -> int:
    """C >= K + P - 1: the padded contraction (operand columns)."""
    start, size = self.chunks[-1]
    return start + size

  @property
  def rows_per_window(self) -> int:
    """Operand rows per window, ceil(L / P) rounded up to `_GROUP`."""
    return _round_up(-(-self.length // self.phases), _GROUP)

  @property
  def row(self) -> int:
    """Samples per padded window: every gathered index stays inside the window's own row."""
    return self.phases * self.rows_per_window + self.contraction

  @property
  def padded_filters(self) -> int:
    return _round_up(self.filters, self.block_filters)

  @property
  def filter_blocks(self) -> int:
    return self.padded_filters // self.block_filters


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def _pow2_at_least(value: int) -> int:
  return max(_DOT_MIN, 1 << (max(value, 1) - 1).bit_length())


def _effective_phases(taps, phases):
  return phases if taps + phases - 1 <= _MAX_PHASED_CONTRACTION else 1


def _make_plan(length, taps, filters, activation, precision, interpret, tiles,
               grad=False, ieee=False) -> _Plan:
  """The forward kernel's layout, or with grad=True the backward's (its `grad_*` options).

  ieee: the compiled kernel multiplies float32 at full precision. Triton builds those products
  from FMA loops, and unrolled over P phases they compile for minutes, so they get one phase.
  """
  option = lambda name: getattr(tiles, ("grad_" if grad else "") + name)
  phases = 1 if ieee else _effective_phases(taps, option("phases"))
  needed = taps + phases - 1
  block = min(option("block_taps"), _pow2_at_least(needed))
  chunks = [(start, block) for start in range(0, needed - block + 1, block)]
  covered = len(chunks) * block
  if covered < needed:
    chunks.append((covered, _pow2_at_least(needed - covered)))
  contraction = chunks[-1][0] + chunks[-1][1]
  cap = max(_DOT_MIN, 1 << (_ACCUMULATOR_ELEMENTS // contraction).bit_length() - 1)
  return _Plan(
      length=length, taps=taps, filters=filters, activation=activation, precision=precision,
      interpret=interpret, tiles=tiles, phases=phases, chunks=tuple(chunks),
      block_rows=option("block_rows"),
      block_filters=min(tiles.block_filters, _pow2_at_least(filters), cap),
      num_warps=option("num_warps"), num_stages=option("num_stages"))


def supported(length: int, taps: int, filters: int, **tile_options) -> tuple[bool, str]:
  """Whether the fused kernel takes this shape (else: why; the "toeplitz" method runs).

  Windows, outputs, taps and filters of any size are padded and masked; the one limit is the
  backward's kernel-gradient accumulator, `[K + P - 1, >= 16]` float32 per program.
  """
  del length, filters
  tiles = TileOptions.create(**tile_options)
  phases = max(_effective_phases(taps, tiles.phases), _effective_phases(taps, tiles.grad_phases))
  if taps + phases - 1 > MAX_CONTRACTION:
    return False, (f"K={taps} taps: the kernel-gradient accumulator takes at most "
                   f"{MAX_CONTRACTION} (K + P - 1)")
  return True, ""


def fused_filter_energy(frames: jax.Array, kernel: jax.Array, bias: jax.Array, *,
                        activation: str = "none", precision: lax.Precision | None = None,
                        interpret: bool | None = None, **tile_options) -> jax.Array:
  """Mean |act(correlate(frame, kernel) + bias)| over each window: `[N, L+K-1] -> [N, F]`.

  Same contract as `windowed.filter_energy`: float32 and bfloat16 inputs, bfloat16
  products when frames and kernel are both bfloat16, float32 accumulation, float32 result;
  reverse-mode differentiable (a `custom_vjp`: no forward mode, no second derivatives).

  Args:
    frames: `[N, L + K - 1]` windows with the context a VALID correlation needs.
    kernel: `[K, F]` FIR kernels (taps x filters).
    bias: `[F]`.
    activation: "none" (identity) or "relu".
    precision: the float32 products' precision inside the kernel: `lax.Precision.HIGHEST`
      for full float32, DEFAULT or HIGH for TF32 (GPU). None: `jax.default_matmul_precision`
      if set, else DEFAULT.
    interpret: run Pallas' interpreter (None: on any backend but "gpu").
    **tile_options: fields of `TileOptions`.

  Returns:
    `[N, F]` float32 energies.

  Raises:
    errors.ConfigError: on a bad shape, dtype, activation, precision or tile option.
  """
  length = _check_args(frames, kernel, bias, activation)
  taps, filters = kernel.shape
  tiles = TileOptions.create(**tile_options)
  ok, reason = supported(length, taps, filters, **tile_options)
  if not ok:
    logging.warning("fused_filter_energy: %s; using the toeplitz method", reason)
    return toeplitz_energy(frames, kernel, bias, activation, None, None,
                           precision=precision)
  if frames.shape[0] == 0:
    return jnp.zeros((0, filters), jnp.float32)
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  precision = _resolve_precision(precision)
  ieee = (not interpret and _compute_dtype(frames, kernel) == jnp.float32
          and precision == lax.Precision.HIGHEST)
  plans = tuple(_make_plan(length, taps, filters, activation, precision, bool(interpret), tiles,
                           grad=grad, ieee=ieee) for grad in (False, True))
  return _fused_energy(plans, frames, kernel, bias)


def _check_args(frames, kernel, bias, activation) -> int:
  """Validates shapes, dtypes and the activation; returns the outputs per window L."""
  if activation not in ACTIVATIONS:
    raise errors.ConfigError(
        f"fused_filter_energy activation={activation!r}: choose one of {ACTIVATIONS}")
  if frames.ndim != 2 or kernel.ndim != 2 or bias.ndim != 1:
    raise errors.ConfigError(
        f"fused_filter_energy needs frames [N, L+K-1], kernel [K, F], bias [F]; got "
        f"{tuple(frames.shape)}, {tuple(kernel.shape)}, {tuple(bias.shape)}")
  taps, filters = kernel.shape
  if bias.shape[0] != filters:
    raise errors.ConfigError(
        f"fused_filter_energy bias has {bias.shape[0]} entries but kernel has {filters} filters")
  length = frames.shape[1] - taps + 1
  if taps < 1 or filters < 1 or length < 1:
    raise errors.ConfigError(
        f"fused_filter_energy frames of {frames.shape[1]} samples are too short for kernels of "
        f"{taps} taps: frames must hold L + K - 1 samples with L >= 1")
  for name, x in (("frames", frames), ("kernel", kernel), ("bias", bias)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise errors.ConfigError(f"fused_filter_energy {name} must be floating point, got {x.dtype}")
  return length


_PRECISION_NAMES = {
    "highest": lax.Precision.HIGHEST, "float32": lax.Precision.HIGHEST,
    "high": lax.Precision.HIGH, "tensorfloat32": lax.Precision.HIGH,
    "bfloat16_3x": lax.Precision.HIGH,
    "default": lax.Precision.DEFAULT, "bfloat16": lax.Precision.DEFAULT,
    "fastest": lax.Precision.DEFAULT,
}


def _resolve_precision(precision) -> lax.Precision:
  """The in-kernel dots' precision: the argument, else the default-matmul-precision setting.

  Pallas' Triton lowering ignores that setting (a dot without precision runs in TF32), so it
  is read here, at trace time.
  """
  if precision is None:
    setting = getattr(jax.config, "jax_default_matmul_precision", None)
    # Settings without a Triton counterpart (e.g. algorithm names) keep the default.
    return _PRECISION_NAMES.get(str(setting).lower(), lax.Precision.DEFAULT)
  if isinstance(precision, str):
    if precision.lower() not in _PRECISION_NAMES:
      raise errors.ConfigError(
          f"fused_filter_energy precision={precision!r}: choose one of "
          f"{sorted(_PRECISION_NAMES)} or a jax.lax.Precision")
    return _PRECISION_NAMES[precision.lower()]
  if not isinstance(precision, lax.Precision):
    raise errors.ConfigError(
        f"fused_filter_energy precision={precision!r}: must be a jax.lax.Precision or None")
  return precision


def _compiler_params(num_warps: int, num_stages: int):
  """Triton's compiler settings under the name this jax version gives them (jax 0.10 and 0.11:
  `CompilerParams`; earlier: `TritonCompilerParams`; failing both, the dict form)."""
  params = getattr(_plgpu, "CompilerParams", None) or getattr(_plgpu, "TritonCompilerParams",
                                                              None)
  if params is not None:
    return params(num_warps=num_warps, num_stages=num_stages)
  return dict(triton=dict(num_warps=num_warps, num_stages=num_stages))


# ----------------------------------------------------------------------------------------------
# Kernel bodies. Rows q of the flattened `[windows * rows_per_window]` operand are tiled by
# `block_rows`; frames and cotangents are flat refs gathered with computed indices, the kernel
# is the `[P * C, BF]` block of the phase-shifted stack.


def _dot(plan, a, b, contract_a=1):
  """a @ b (or a^T @ b with contract_a=0) with float32 accumulation at the plan's precision."""
  return lax.dot_general(a, b, (((contract_a,), (0,)), ((), ())),
                         precision=(plan.precision, plan.precision),
                         preferred_element_type=jnp.float32)


def _rows(plan, tile):
  """(window, u, base) of tile `tile`'s rows, each `[block_rows]` int32: the window, the row
  within it, and the flat index of the row's first sample (a multiple of P)."""
  m = plan.block_rows
  q = tile * m + lax.broadcasted_iota(jnp.int32, (m,), 0)
  window = q // plan.rows_per_window
  u = q - window * plan.rows_per_window
  base = window * plan.row + plan.phases * u
  if plan.phases > 1:
    base = pl.multiple_of(base, plan.phases)
  return window, u, base


def _operand(plan, frames_ref, base):
  """The gathered operand A[q, j] = frame[P * u + j], one `[block_rows, size]` array per
  contraction block."""
  chunks = []
  for start, size in plan.chunks:
    cols = lax.broadcasted_iota(jnp.int32, (plan.block_rows, size), 1) + start
    chunks.append(frames_ref[base[:, None] + cols])
  return chunks


def _phase_outputs(plan, operand, kernel_ref, phase):
  """y - bias of phase `phase` (a Python or traced int): `[block_rows, BF]` float32."""
  y = None
  for (start, size), x in zip(plan.chunks, operand):
    w = kernel_ref[pl.ds(phase * plan.contraction + start, size), :]
    product = _dot(plan, x, w)
    y = product if y is None else y + product
  return y


def _valid(plan, u, phase):
  """`[block_rows, 1]` bool: output P*u + phase is real (t < L); None when all always are."""
  if plan.phases * plan.rows_per_window == plan.length:
    return None
  return (plan.phases * u + phase < plan.length)[:, None]


def _pool(plan, y):
  return jnp.maximum(y, 0.0) if plan.activation == "relu" else jnp.abs(y)


def _derivative(plan, y):
  """d|act(y)|/dy as autodiff takes it: `jnp.abs` +1 at 0, `jax.nn.relu` 0 at 0."""
  if plan.activation == "relu":
    return jnp.where(y > 0, 1.0, 0.0)
  return jnp.where(y < 0, -1.0, 1.0)


def _forward_kernel(frames_ref, kernel_ref, bias_ref, out_ref, *, plan, tiles_per_program):
  """Writes, per tile, the sums of |act(y)| over each group of `_GROUP` rows (one window's)."""
  m, bf = plan.block_rows, plan.block_filters
  groups = m // _GROUP
  bias = bias_ref[...]
  first = pl.program_id(0) * tiles_per_program

  def tile(j, carry):
    _, u, base = _rows(plan, first + j)
    operand = _operand(plan, frames_ref, base)
    total = jnp.zeros((m, bf), jnp.float32)
    for phase in range(plan.phases):
      pooled = _pool(plan, _phase_outputs(plan, operand, kernel_ref, phase) + bias[None, :])
      valid = _valid(plan, u, phase)
      total = total + (pooled if valid is None else jnp.where(valid, pooled, 0.0))
    sums = jnp.sum(total.reshape(groups, _GROUP, bf), axis=1)
    out_ref[pl.ds(j * groups, groups), :] = sums
    return carry

  if tiles_per_program == 1:  # no loop: Triton would pipeline its loads into shared memory
    tile(0, 0)
  else:
    lax.fori_loop(0, tiles_per_program, tile, 0)


def _backward_kernel(frames_ref, kernel_ref, bias_ref, grad_ref, dkernel_ref, dbias_ref, *,
                     plan, tiles_per_program):
  """One phase's kernel-gradient partial `[C, BF]` (and bias-gradient partial `[BF]`) over the
  program's row tiles, y recomputed on chip. `grad_ref` holds g / L, flat `[windows * F']`."""
  m, bf = plan.block_rows, plan.block_filters
  phase = pl.program_id(1)
  bias = bias_ref[...]
  filter_cols = (lax.broadcasted_iota(jnp.int32, (m, bf), 1)
                 + pl.program_id(2) * bf)
  first = pl.program_id(0) * tiles_per_program
  regather = plan.contraction > _MAX_PHASED_CONTRACTION

  def tile(j, carry):
    dkernel, dbias = carry
    window, u, base = _rows(plan, first + j)
    operand = _operand(plan, frames_ref, base)
    y = _phase_outputs(plan, operand, kernel_ref, phase) + bias[None, :]
    g = _derivative(plan, y) * grad_ref[window[:, None] * plan.padded_filters + filter_cols]
    valid = _valid(plan, u, phase)
    if valid is not None:
      g = jnp.where(valid, g, 0.0)
    if regather:  # a long operand is not kept alive across the products
      operand = _operand(plan, frames_ref, base)
    dkernel = tuple(d + _dot(plan, x, g.astype(x.dtype), contract_a=0)
                    for d, x in zip(dkernel, operand))
    return dkernel, dbias + jnp.sum(g, axis=0)

  init = (tuple(jnp.zeros((size, bf), jnp.float32) for _, size in plan.chunks),
          jnp.zeros((bf,), jnp.float32))
  dkernel, dbias = lax.fori_loop(0, tiles_per_program, tile, init)
  for (start, size), d in zip(plan.chunks, dkernel):
    dkernel_ref[0, pl.ds(start, size), :] = d
  dbias_ref[0, 0, :] = dbias


# ----------------------------------------------------------------------------------------------
# Calls: padding, grids, custom VJP.


def _compute_dtype(frames, kernel):
  if frames.dtype == jnp.bfloat16 and kernel.dtype == jnp.bfloat16:
    return jnp.bfloat16
  return jnp.float32


def _padded_windows(plan, num, tiles_per_program):
  """Windows padded so that the rows fill whole programs of `tiles_per_program` tiles."""
  rows = plan.block_rows * tiles_per_program
  unit = math.lcm(rows, plan.rows_per_window) // plan.rows_per_window
  return _round_up(num, unit)


def _flat_frames(plan, frames, dtype, windows):
  """`[N, L+K-1]` -> flat `[windows * row]` in `dtype`, zero-padded."""
  padded = jnp.pad(frames.astype(dtype),
                   ((0, windows - frames.shape[0]), (0, plan.row - frames.shape[1])))
  return padded.reshape(-1)


def _stacked_kernel(plan, kernel, dtype):
  """`[K, F]` -> `[P * C, F']`: block r is the kernel shifted down by r rows (zero-padded)."""
  kernel = jnp.pad(kernel.astype(dtype), ((0, 0), (0, plan.padded_filters - plan.filters)))
  extra = plan.contraction - plan.taps
  return jnp.concatenate(
      [jnp.pad(kernel, ((r, extra - r), (0, 0))) for r in range(plan.phases)], axis=0)


def _padded_bias(plan, bias):
  return jnp.pad(bias.astype(jnp.float32), (0, plan.padded_filters - plan.filters))


def _pallas_options(plan):
  if plan.interpret:
    return dict(interpret=True)
  return dict(compiler_params=_compiler_params(plan.num_warps, plan.num_stages))


def _max_windows(plan) -> int:
  """Windows per pallas_call that keep every flat index below 2**31 (int32 offsets)."""
  return max(1, (2**31 - 1) // plan.row - 4 * plan.block_rows)


def _pieces(num, limit):
  return [(start, min(start + limit, num)) for start in range(0, num, limit)]


def _forward_call(plan, frames, kernel, bias):
  """`[N, L+K-1]` frames -> `[N, F]` energies through the forward kernel."""
  dtype = _compute_dtype(frames, kernel)
  kernel_p, bias_p = _stacked_kernel(plan, kernel, dtype), _padded_bias(plan, bias)
  energies = [_forward_piece(plan, frames[a:b], kernel_p, bias_p, dtype)
              for a, b in _pieces(frames.shape[0], _max_windows(plan))]
  return energies[0] if len(energies) == 1 else jnp.concatenate(energies, axis=0)


def _forward_piece(plan, frames, kernel_p, bias_p, dtype):
  tiles = plan.tiles
  num = frames.shape[0]
  per_program = tiles.tiles_per_program
  windows = _padded_windows(plan, num, per_program)
  programs = windows * plan.rows_per_window // (plan.block_rows * per_program)
  groups = plan.block_rows // _GROUP * per_program
  bf = plan.block_filters
  flat = _flat_frames(plan, frames, dtype, windows)
  sums = pl.pallas_call(
      functools.partial(_forward_kernel, plan=plan, tiles_per_program=per_program),
      grid=(programs, plan.filter_blocks),
      in_specs=[pl.BlockSpec(flat.shape, lambda i, f: (0,)),
                pl.BlockSpec((kernel_p.shape[0], bf), lambda i, f: (0, f)),
                pl.BlockSpec((bf,), lambda i, f: (f,))],
      out_specs=pl.BlockSpec((groups, bf), lambda i, f: (i, f)),
      out_shape=jax.ShapeDtypeStruct((programs * groups, plan.padded_filters), jnp.float32),
      name="fused_filter_energy",
      **_pallas_options(plan),
  )(flat, kernel_p, bias_p)
  sums = sums.reshape(windows, plan.rows_per_window // _GROUP, plan.padded_filters)
  return jnp.sum(sums, axis=1)[:num, :plan.filters] * (1.0 / plan.length)


def _grad_tiles_per_program(plan, num):
  """Backward row tiles per program: the option, else enough for about `_GRAD_PROGRAMS`."""
  if plan.tiles.grad_tiles_per_program is not None:
    return plan.tiles.grad_tiles_per_program
  tiles = -(-num * plan.rows_per_window // plan.block_rows)
  per_phase = max(1, _GRAD_PROGRAMS // (plan.phases * plan.filter_blocks))
  return max(1, -(-tiles // per_phase))


def _backward_call(plan, frames, kernel, bias, grad):
  """(dkernel `[K, F]` float32, dbias `[F]` float32) through the backward kernel."""
  dtype = _compute_dtype(frames, kernel)
  kernel_p, bias_p = _stacked_kernel(plan, kernel, dtype), _padded_bias(plan, bias)
  dkernel = dbias = 0.0
  for a, b in _pieces(frames.shape[0], _max_windows(plan)):
    dk, db = _backward_piece(plan, frames[a:b], kernel_p, bias_p, grad[a:b], dtype)
    dkernel, dbias = dkernel + dk, dbias + db
  # Phase r's partial holds the gradient of the kernel shifted down by r rows.
  dkernel = dkernel.reshape(plan.phases, plan.contraction, plan.padded_filters)
  dkernel = sum(dkernel[r, r:r + plan.taps] for r in range(plan.phases))
  return dkernel[:, :plan.filters], dbias[:plan.filters]


def _backward_piece(plan, frames, kernel_p, bias_p, grad, dtype):
  num = frames.shape[0]
  per_program = _grad_tiles_per_program(plan, num)
  windows = _padded_windows(plan, num, per_program)
  programs = windows * plan.rows_per_window // (plan.block_rows * per_program)
  bf, contraction = plan.block_filters, plan.contraction
  flat = _flat_frames(plan, frames, dtype, windows)
  grad_p = jnp.pad(grad.astype(jnp.float32) * (1.0 / plan.length),
                   ((0, windows - num), (0, plan.padded_filters - plan.filters))).reshape(-1)
  dkernel, dbias = pl.pallas_call(
      functools.partial(_backward_kernel, plan=plan, tiles_per_program=per_program),
      grid=(programs, plan.phases, plan.filter_blocks),
      in_specs=[pl.BlockSpec(flat.shape, lambda i, r, f: (0,)),
                pl.BlockSpec((kernel_p.shape[0], bf), lambda i, r, f: (0, f)),
                pl.BlockSpec((bf,), lambda i, r, f: (f,)),
                pl.BlockSpec(grad_p.shape, lambda i, r, f: (0,))],
      out_specs=[pl.BlockSpec((1, contraction, bf), lambda i, r, f: (i, r, f)),
                 pl.BlockSpec((1, 1, bf), lambda i, r, f: (i, r, f))],
      out_shape=[jax.ShapeDtypeStruct((programs, plan.phases * contraction,
                                       plan.padded_filters), jnp.float32),
                 jax.ShapeDtypeStruct((programs, plan.phases, plan.padded_filters),
                                      jnp.float32)],
      name="fused_filter_energy_grad",
      **_pallas_options(plan),
  )(flat, kernel_p, bias_p, grad_p)
  return jnp.sum(dkernel, axis=0), jnp.sum(dbias, axis=(0, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_energy(plans, frames, kernel, bias):
  """`plans`: the forward kernel's layout and the backward kernel's."""
  return _forward_call(plans[0], frames, kernel, bias)


def _fused_energy_fwd(plans, frames, kernel, bias):
  out = _forward_call(plans[0], frames.value, kernel.value, bias.value)
  wanted = tuple(() if x.perturbed else None for x in (frames, kernel, bias))
  return out, (frames.value, kernel.value, bias.value, wanted)


def _fused_energy_bwd(plans, residuals, grad):
  plan = plans[1]
  frames, kernel, bias, wanted = residuals
  want_frames, want_kernel, want_bias = (flag is not None for flag in wanted)
  if isinstance(grad, jax.custom_derivatives.SymbolicZero):
    return None, None, None
  grad_frames = grad_kernel = grad_bias = None
  if want_kernel or want_bias:
    dkernel, dbias = _backward_call(plan, frames, kernel, bias, grad)
    grad_kernel = dkernel.astype(kernel.dtype) if want_kernel else None
    grad_bias = dbias.astype(bias.dtype) if want_bias else None
  if want_frames:
    # Not fused: the first layer's input gradient, from the "toeplitz" method's VJP.
    _, vjp = jax.vjp(lambda x: toeplitz_energy(
        x, kernel, bias, plan.activation, None, None, precision=plan.precision), frames)
    grad_frames = vjp(grad)[0]
  return grad_frames, grad_kernel, grad_bias


_fused_energy.defvjp(_fused_energy_fwd, _fused_energy_bwd, symbolic_zeros=True)
