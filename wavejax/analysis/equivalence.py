"""Stacked linear convolutions are one convolution (paper Sec. 2.2.2, Figs. 1-2), and where not.

A stack of 1-D convolution layers with linear activations and no pooling computes, for every output
channel, a linear combination of band-filtered copies of the input: the same output comes from ONE
convolution whose kernel is the composition of the layers' kernels ("Output (2,1) can be generated
using a single multi-band bandpass filter", Sec. 2.2.2). `collapse` computes that kernel exactly;
`apply_stack` runs the stack itself, so the two can be compared sample by sample.

Strides and average (or strided) pooling are linear too: the stack still collapses, into one
convolution with the product of the strides whose kernel is h1 * upsample(h2, s1) * ...; its
frequency response is H1(f) H2(s1 f) ..., so every layer after a stride s can only shape the
spectrum periodically in f with period fs / s: it cannot tell f from f + fs / s (aliasing, Sec.
2.2.3). ReLU and max pooling are not linear: `best_single_kernel` fits the best single
convolution by least squares and reports the output energy it cannot explain.

Conventions (Flax/`lax`): signals `[time, channels]`, kernels `[taps, in, out]`, cross-correlation
(no kernel flip), VALID padding. Everything is float64 numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import signal

from wavejax import errors

ACTIVATIONS = ("linear", "relu")
POOLS = ("none", "max", "avg", "stride")


@dataclasses.dataclass(frozen=True)
class Layer:
  """One convolution layer: correlate, add bias, stride, activation, then pool.

  Attributes:
    kernel: `[taps, in, out]` (a `[taps]` kernel means one channel in and out).
    bias: `[out]`, or None for zeros.
    stride: the convolution's stride.
    activation: "linear" or "relu".
    pool: "none", "max", "avg" (mean of each block) or "stride" (first sample of each block).
    pool_size: block length (and stride) of the pooling.
  """
  kernel: np.ndarray
  bias: np.ndarray | None = None
  stride: int = 1
  activation: str = "linear"
  pool: str = "none"
  pool_size: int = 2

  def __post_init__(self):
    kernel = np.asarray(self.kernel, np.float64)
    kernel = kernel[:, None, None] if kernel.ndim == 1 else kernel
    if kernel.ndim != 3:
      raise errors.ConfigError(f"Layer.kernel must be [taps, in, out], got shape {kernel.shape}")
    bias = np.zeros(kernel.shape[2]) if self.bias is None else np.asarray(self.bias, np.float64)
    if bias.shape != (kernel.shape[2],):
      raise errors.ConfigError(f"Layer.bias must be [{kernel.shape[2]}], got {bias.shape}")
    if self.activation not in ACTIVATIONS:
      raise errors.ConfigError(f"Layer.activation={self.activation!r}: choose one of {ACTIVATIONS}")
    if self.pool not in POOLS:
      raise errors.ConfigError(f"Layer.pool={self.pool!r}: choose one of {POOLS}")
    if self.stride < 1 or self.pool_size < 1:
      raise errors.ConfigError("Layer.stride and Layer.pool_size must be >= 1")
    object.__setattr__(self, "kernel", kernel)
    object.__setattr__(self, "bias", bias)

  @property
  def linear(self) -> bool:
    return self.activation == "linear" and self.pool != "max"


def _as_channels(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x[:, None] if x.ndim == 1 else x


def conv1d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None,
           stride: int = 1) -> np.ndarray:
  """VALID cross-correlation: y[t, o] = sum_{k, i} x[s t + k, i] kernel[k, i, o] + bias[o]."""
  x, kernel = _as_channels(x), np.asarray(kernel, np.float64)
  kernel = kernel[:, None, None] if kernel.ndim == 1 else kernel
  taps = kernel.shape[0]
  if x.shape[0] < taps:
    raise errors.ConfigError(f"signal of {x.shape[0]} samples is shorter than a kernel of {taps}")
  count = (x.shape[0] - taps) // stride + 1
  y = np.zeros((count, kernel.shape[2]))
  for k in range(taps):
    y += x[k:k + stride * (count - 1) + 1:stride] @ kernel[k]
  return y if bias is None else y + bias


def pool1d(x: np.ndarray, size: int, kind: str) -> np.ndarray:
  """Non-overlapping VALID pooling of `[T, C]` by `size`: max, avg (mean) or stride (x[::size])."""
  x = _as_channels(x)
  count = x.shape[0] // size
  blocks = x[:count * size].reshape(count, size, x.shape[1])
  if kind == "max":
    return blocks.max(axis=1)
  if kind == "avg":
    return blocks.mean(axis=1)
  if kind == "stride":
    return blocks[:, 0]
  if kind == "none":
    return x
  raise errors.ConfigError(f"pool={kind!r}: choose one of {POOLS}")


def apply_layer(x: np.ndarray, layer: Layer) -> np.ndarray:
  y = conv1d(x, layer.kernel, layer.bias, layer.stride)
  if layer.activation == "relu":
    y = np.maximum(y, 0.0)
  return pool1d(y, layer.pool_size, layer.pool)


def apply_stack(x: np.ndarray, layers: list[Layer]) -> np.ndarray:
  """Runs the stack on `x` (`[T]` or `[T, C]`); returns `[T', C_out]`."""
  y = _as_channels(x)
  for layer in layers:
    y = apply_layer(y, layer)
  return y


def _pool_as_conv(kind: str, size: int, channels: int) -> tuple[np.ndarray, int]:
  """Average or strided pooling as a depthwise `[size, C, C]` kernel with stride `size`."""
  taps = np.full(size, 1.0 / size) if kind == "avg" else np.eye(size)[0]
  return taps[:, None, None] * np.eye(channels)[None], size


def _compose(kernel: np.ndarray, bias: np.ndarray, stride: int, nxt: np.ndarray,
             nxt_bias: np.ndarray, nxt_stride: int) -> tuple[np.ndarray, np.ndarray, int]:
  """The kernel of (current equivalent, at total stride `stride`) followed by `nxt`.

  y'[t] = sum_j y[s' t + j] h[j] with y[n] = sum_m x[S n + m] H[m] gives
  H'[S j + m] = sum_j H[m] h[j] (matrix product over the middle channels) and stride S s'.
  """
  taps, inner = kernel.shape[0], nxt.shape[0]
  composed = np.zeros((taps + stride * (inner - 1), kernel.shape[1], nxt.shape[2]))
  for j in range(inner):
    composed[stride * j:stride * j + taps] += np.einsum("mic,co->mio", kernel, nxt[j])
  return composed, nxt_bias + bias @ nxt.sum(axis=0), stride * nxt_stride


def collapse(layers: list[Layer], linearize: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
  """The single convolution `(kernel [taps, in, out], bias [out], stride)` equal to the stack.

  Exact when every layer is linear (linear activation; no, average or strided pooling): then
  `conv1d(x, *collapse(layers))` equals `apply_stack(x, layers)` sample by sample. With
  `linearize=True` ReLU is treated as the identity and max pooling as average pooling: the result
  is what the stack would be without its nonlinearities, to measure how far it is from that.

  Raises:
    ConfigError: on a nonlinear layer without `linearize`, or on an empty stack.
  """
  if not layers:
    raise errors.ConfigError("collapse needs at least one layer")
  for index, layer in enumerate(layers):
    if not (layer.linear or linearize):
      raise errors.ConfigError(
          f"layer {index} ({layer.activation}, pool={layer.pool}) is not linear: no single "
          "kernel equals the stack; pass linearize=True for the linear part")
  first = layers[0]
  kernel, bias, stride = first.kernel, first.bias, first.stride
  for index, layer in enumerate(layers):
    if index:
      kernel, bias, stride = _compose(kernel, bias, stride, layer.kernel, layer.bias, layer.stride)
    if layer.pool != "none":
      pool_kind = "avg" if layer.pool == "max" else layer.pool
      pool_kernel, pool_stride = _pool_as_conv(pool_kind, layer.pool_size, kernel.shape[2])
      kernel, bias, stride = _compose(kernel, bias, stride, pool_kernel,
                                      np.zeros(kernel.shape[2]), pool_stride)
  return kernel, bias, stride


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
  """||actual - expected|| / ||expected|| over the common length."""
  count = min(len(actual), len(expected))
  actual, expected = np.asarray(actual)[:count], np.asarray(expected)[:count]
  return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


def best_single_kernel(x: np.ndarray, y: np.ndarray, taps: int,
                       stride: int = 1) -> tuple[np.ndarray, np.ndarray, float]:
  """Least-squares single convolution `(kernel [taps, in, out], bias [out])` from `x` to `y`.

  Returns the kernel, the bias and the unexplained energy fraction ||y - conv(x)||^2 / ||y - mean
  y||^2 (0: one convolution reproduces the stack exactly; 1: it explains nothing but the mean).
  """
  x, y = _as_channels(x), _as_channels(y)
  count = min(y.shape[0], (x.shape[0] - taps) // stride + 1)
  index = stride * np.arange(count)[:, None] + np.arange(taps)[None, :]
  design = x[index].reshape(count, taps * x.shape[1])
  design = np.concatenate([design, np.ones((count, 1))], axis=1)
  # Normal equations with a vanishing ridge: as exact as lstsq here, and far faster than its SVD
  # when other processes load the cores (threaded LAPACK), and defined for band-limited inputs.
  gram = design.T @ design
  ridge = 1e-12 * np.trace(gram) / len(gram)
  solution = np.linalg.solve(gram + ridge * np.eye(len(gram)), design.T @ y[:count])
  residual = y[:count] - design @ solution
  centred = y[:count] - y[:count].mean(axis=0)
  unexplained = float(np.sum(residual**2) / max(np.sum(centred**2), 1e-300))
  kernel = solution[:-1].reshape(taps, x.shape[1], y.shape[1])
  return kernel, solution[-1], unexplained


def frequency_response(kernel: np.ndarray, sample_rate: float,
                       num_freqs: int = 1025) -> tuple[np.ndarray, np.ndarray]:
  """(freqs [W] Hz, |H| [W, in, out]) of a `[taps, in, out]` kernel (or `[taps]`)."""
  kernel = np.asarray(kernel, np.float64)
  kernel = kernel[:, None, None] if kernel.ndim == 1 else kernel
  n_fft = max(2 * (num_freqs - 1), kernel.shape[0])
  magnitude = np.abs(np.fft.rfft(kernel, n=n_fft, axis=0))
  freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
  return freqs[:num_freqs], magnitude[:num_freqs]


def passbands(kernel_1d: np.ndarray, sample_rate: float,
              threshold_db: float = -6.0) -> list[tuple[float, float]]:
  """The frequency intervals where |H| is within `threshold_db` of its maximum, in Hz."""
  freqs, magnitude = frequency_response(np.asarray(kernel_1d, np.float64), sample_rate, 4097)
  magnitude = magnitude[:, 0, 0]
  above = magnitude >= magnitude.max() * 10**(threshold_db / 20.0)
  edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(int), [0]])))
  return [(float(freqs[a]), float(freqs[b - 1])) for a, b in zip(edges[::2], edges[1::2])]


def paper_stack(sample_rate: float = 16000.0, taps: int = 101) -> list[Layer]:
  """The two-layer, two-filter linear network of Sec. 2.2.2 (Figs. 1-2), at `sample_rate`.

  Layer 1: a low-pass (0 - fs/4) and a high-pass (fs/4 - fs/2). Layer 2, filter (2,1): a
  band-pass fs/8 - fs/4 on the low channel plus a high-pass 3fs/8 - fs/2 on the high channel, so
  that Output (2,1) holds 2-4 kHz and 6-8 kHz at 16 kHz; filter (2,2): a high-pass on the low
  channel plus a low-pass on the high channel, an all-stop (Output (2,2) "contains almost no
  frequency components").
  """
  nyquist = sample_rate / 2.0

  def design(low, high):
    if low <= 0:
      return signal.firwin(taps, high, fs=sample_rate)
    if high >= nyquist:
      return signal.firwin(taps, low, pass_zero=False, fs=sample_rate)
    return signal.firwin(taps, [low, high], pass_zero=False, fs=sample_rate)

  quarter = nyquist / 2.0
  first = np.stack([design(0, quarter), design(quarter, nyquist)], axis=1)[:, None, :]
  second = np.zeros((taps, 2, 2))
  second[:, 0, 0] = design(quarter / 2, quarter)           # (2,1) from the 0-4 kHz channel
  second[:, 1, 0] = design(3 * quarter / 2, nyquist)       # (2,1) from the 4-8 kHz channel
  second[:, 0, 1] = design(quarter, nyquist)               # (2,2): stop what channel 1 has
  second[:, 1, 1] = design(0, quarter)                     # (2,2): stop what channel 2 has
  return [Layer(first), Layer(second)]


def with_nonlinearity(layers: list[Layer], variant: str) -> list[Layer]:
  """`layers` with one change: "linear" (none), "relu", "maxpool", "avgpool", "stridepool" (after
  the first layer) or "stride" (a stride-2 first convolution)."""
  first, rest = layers[0], list(layers[1:])
  changes = {
      "linear": {},
      "relu": {"activation": "relu"},
      "maxpool": {"pool": "max", "pool_size": 2},
      "avgpool": {"pool": "avg", "pool_size": 2},
      "stridepool": {"pool": "stride", "pool_size": 2},
      "stride": {"stride": 2},
  }
  if variant not in changes:
    raise errors.ConfigError(f"variant={variant!r}: choose one of {sorted(changes)}")
  return [dataclasses.replace(first, **changes[variant]), *rest]


VARIANTS = ("linear", "stride", "avgpool", "stridepool", "relu", "maxpool")


def equivalence_report(x: np.ndarray, layers: list[Layer], sample_rate: float,
                       variants=VARIANTS) -> dict:
  """For each variant of `layers`: does one convolution reproduce the stack on `x`?

  Per variant: `collapsed_error` (relative error of the collapsed, linearised kernel against the
  stack), `single_kernel_unexplained` (energy fraction the best least-squares single convolution
  of the collapsed kernel's length cannot explain), `equivalent` (unexplained < 1e-6) and, for
  the linear stack, the passbands of every collapsed output filter. `verdict` is one line.
  """
  report = {}
  for variant in variants:
    stack = with_nonlinearity(layers, variant)
    kernel, bias, stride = collapse(stack, linearize=True)
    stacked = apply_stack(x, stack)
    collapsed = conv1d(x, kernel, bias, stride)
    _, _, unexplained = best_single_kernel(x, stacked, kernel.shape[0], stride)
    entry = {"collapsed_error": relative_error(collapsed, stacked),
             "single_kernel_unexplained": unexplained,
             "equivalent": bool(unexplained < 1e-6), "kernel_taps": int(kernel.shape[0]),
             "stride": int(stride)}
    if variant == "linear":
      entry["passbands_hz"] = [passbands(kernel[:, 0, o], sample_rate)
                               for o in range(kernel.shape[2])]
    report[variant] = entry
  report["verdict"] = equivalence_verdict(report)
  return report


def equivalence_verdict(report: dict) -> str:
  """One line: for which variants one convolution equals the stack, and how far the others are."""
  holds = [v for v in VARIANTS if v in report and report[v]["equivalent"]]
  fails = [f"{v} ({report[v]['single_kernel_unexplained']:.1%} of the output unexplained)"
           for v in VARIANTS if v in report and not report[v]["equivalent"]]
  if not holds:
    return "Sec. 2.2.2 does not hold: no variant of the stack equals one convolution; " + \
        ", ".join(fails)
  strided = [v for v in holds if report[v]["stride"] > 1]
  note = (f" ({', '.join(strided)}: one STRIDED kernel whose later-layer factor repeats every "
          "fs / stride, i.e. it cannot tell aliases apart)") if strided else ""
  return (f"Sec. 2.2.2 holds: one convolution equals the stack for {', '.join(holds)}{note}, max "
          f"relative error {max(report[v]['collapsed_error'] for v in holds):.1e}; it fails for "
          f"{', '.join(fails) or 'none'}")
