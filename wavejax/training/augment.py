"""Waveform augmentations drawn inside the jitted train step from the step's key.

Every augmentation is a pure, jittable function of a `jax.random` key and a `[B, T]` float32 batch
that makes one independent draw per example and keeps the shape. Each is the composition of a
public `draw_*` function (key -> the per-example parameters) and a deterministic function of those
parameters, so that the parameters can be inspected or reused:

  gain        = apply_gain(waveforms, draw_gain_db(key, B, max_db))
  time_shift  = apply_shift(waveforms, draw_shift(key, B, max_samples))
  add_noise   = mix_at_snr(waveforms, *draw_noise(key, waveforms.shape, snr_db_range, noise))
  speed       = resample_by(waveforms, draw_speed(key, B, max_change))
  mixup       = apply_mixup(waveforms, targets, *draw_mixup(key, weights, alpha))

`augment` applies the ones a `Settings` enables to a train-step batch in a fixed order (speed,
shift, gain, noise, mixup) from one key, split into one key per augmentation whether it is enabled
or not, so turning one on never changes the draws of another. `step_key` derives that key from the
run's key and the optimiser step, as the dropout key is, so a resumed run draws what an unbroken
one does. Mixup replaces hard labels by soft `targets`, trained with `soft_cross_entropy`.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from wavejax import errors
from wavejax.data import audio, corpus

# Folded into the step's dropout key to give the augmentation key of that step.
AUGMENT_STREAM = 0x61756721
# Samples of magnitude above this (-80 dBFS, `audio.SILENCE_PEAK`) delimit a clip's active span.
ACTIVE_LEVEL = audio.SILENCE_PEAK
# Speed perturbation's windowed-sinc interpolator: taps on each side of the output position, and
# the cutoff as a fraction of the lower of the two Nyquist frequencies (the transition band of the
# Blackman window over 32 taps sits around it).
SPEED_HALF_TAPS = 16
SPEED_ROLLOFF = 0.9


# ----------------------------------------------------------------------------------------------
# Gain


def draw_gain_db(key: jax.Array, batch_size: int, max_db: float) -> jax.Array:
  """`[B]` gains in dB, uniform in [-max_db, max_db]."""
  return jax.random.uniform(key, (batch_size,), jnp.float32, -max_db, max_db)


def apply_gain(waveforms: jax.Array, gain_db: jax.Array) -> jax.Array:
  """Scales example b by 10^(gain_db[b] / 20)."""
  return waveforms * jnp.power(10.0, gain_db / 20.0)[:, None].astype(waveforms.dtype)


def gain(key: jax.Array, waveforms: jax.Array, max_db: float) -> jax.Array:
  """A uniform gain in [-max_db, +max_db] dB per example."""
  return apply_gain(waveforms, draw_gain_db(key, waveforms.shape[0], max_db))


# ----------------------------------------------------------------------------------------------
# Time shift


def draw_shift(key: jax.Array, batch_size: int, max_samples: int) -> jax.Array:
  """`[B]` int32 shifts, uniform integers in [-max_samples, max_samples]."""
  return jax.random.randint(key, (batch_size,), -max_samples, max_samples + 1, jnp.int32)


def apply_shift(waveforms: jax.Array, shifts: jax.Array) -> jax.Array:
  """Delays example b by shifts[b] samples (advances it when negative), zero-filling the samples
  that enter and dropping those that leave: speech never wraps around from the end to the start."""
  length = waveforms.shape[1]
  source = jnp.arange(length)[None, :] - shifts[:, None]
  inside = (source >= 0) & (source < length)
  moved = jnp.take_along_axis(waveforms, jnp.clip(source, 0, length - 1), axis=1)
  return jnp.where(inside, moved, jnp.zeros((), waveforms.dtype))


def time_shift(key: jax.Array, waveforms: jax.Array, max_samples: int) -> jax.Array:
  """A zero-filled shift by a uniform integer in [-max_samples, max_samples] per example."""
  return apply_shift(waveforms, draw_shift(key, waveforms.shape[0], max_samples))


# ----------------------------------------------------------------------------------------------
# Additive noise


def active_mask(waveforms: jax.Array) -> jax.Array:
  """`[B, T]` True from each example's first to its last sample above `ACTIVE_LEVEL`.

  The span leaves out leading and trailing silence, above all the zero padding that
  `audio.fit_length` adds to short utterances, so that the power of a 2 s utterance padded to 6 s
  is the power of the utterance. Pauses inside the span count. A silent example has no span.
  """
  active = jnp.abs(waveforms) > ACTIVE_LEVEL
  length = waveforms.shape[1]
  first = jnp.argmax(active, axis=1)
  last = length - 1 - jnp.argmax(active[:, ::-1], axis=1)
  position = jnp.arange(length)[None, :]
  return ((position >= first[:, None]) & (position <= last[:, None])
          & jnp.any(active, axis=1, keepdims=True))


def mix_at_snr(waveforms: jax.Array, noise: jax.Array, snr_db: jax.Array) -> jax.Array:
  """Adds `noise` `[B, T]` scaled so that each example's SNR over its active span is `snr_db[b]`.

  The signal power and the noise power are both measured over the example's active span
  (`active_mask`); the scaled noise covers the whole clip, padding included. A silent example, or
  one whose noise is silent over the span, gets no noise (a scale of 0, never NaN).
  """
  span = active_mask(waveforms).astype(jnp.float32)
  signal_energy = jnp.sum(jnp.square(waveforms.astype(jnp.float32)) * span, axis=1)
  noise_energy = jnp.sum(jnp.square(noise.astype(jnp.float32)) * span, axis=1)
  audible = noise_energy > 0
  ratio = signal_energy / jnp.where(audible, noise_energy, 1.0) * jnp.power(10.0, -snr_db / 10.0)
  scale = jnp.where(audible, jnp.sqrt(ratio), 0.0)
  return waveforms + (scale[:, None] * noise).astype(waveforms.dtype)


def draw_noise(key: jax.Array, shape: tuple[int, int], snr_db_range: tuple[float, float],
               noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Unscaled noise `[B, T]` and the SNRs `[B]` (dB, uniform in `snr_db_range`) to mix it at.

  With `noise=None` the noise is Gaussian white noise. Otherwise `noise` is `[M, T_noise]` clips
  (e.g. from `load_noise_clips`); example b reads clip m_b (uniform) from offset o_b (uniform in
  [0, T_noise)) circularly: a clip shorter than T is tiled, and a read that runs past the clip's
  end continues from its start.
  """
  batch_size, length = shape
  low, high = snr_db_range
  snr_key, clip_key, offset_key = jax.random.split(key, 3)
  snr_db = jax.random.uniform(snr_key, (batch_size,), jnp.float32, low, high)
  if noise is None:
    return jax.random.normal(clip_key, shape, jnp.float32), snr_db
  if noise.ndim != 2 or noise.shape[0] < 1 or noise.shape[1] < 1:
    raise ValueError(f"noise clips must be a non-empty [M, T_noise] array, not {noise.shape}")
  num_clips, clip_length = noise.shape
  clips = jax.random.randint(clip_key, (batch_size,), 0, num_clips)
  offsets = jax.random.randint(offset_key, (batch_size,), 0, clip_length)
  positions = (offsets[:, None] + jnp.arange(length)[None, :]) % clip_length
  return jnp.asarray(noise, jnp.float32)[clips[:, None], positions], snr_db


def add_noise(key: jax.Array, waveforms: jax.Array, snr_db_range: tuple[float, float],
              noise: jax.Array | None = None) -> jax.Array:
  """Additive noise at an SNR uniform in [low, high] dB per example (see `draw_noise` for the
  noise, `mix_at_snr` for how the SNR is measured)."""
  return mix_at_snr(waveforms, *draw_noise(key, waveforms.shape, snr_db_range, noise))


# ----------------------------------------------------------------------------------------------
# Speed perturbation


def draw_speed(key: jax.Array, batch_size: int, max_change: float) -> jax.Array:
  """`[B]` speed factors, uniform in [1 - max_change, 1 + max_change]."""
  return jax.random.uniform(key, (batch_size,), jnp.float32, 1.0 - max_change, 1.0 + max_change)


def resample_by(waveforms: jax.Array, factors: jax.Array,
                half_taps: int = SPEED_HALF_TAPS) -> jax.Array:
  """Plays example b `factors[b]` times as fast: output sample n is the input at time n * factor.

  A factor above 1 shortens the content (higher pitch) and zero-pads the tail; below 1 it
  lengthens it and the tail beyond T is cut, so the length stays T. The input between samples is
  a windowed-sinc interpolation over `2 * half_taps` samples (Blackman window), low-passed at
  `SPEED_ROLLOFF` x min(1, 1 / factor) x Nyquist so that a speed-up does not alias content above
  the new Nyquist frequency; the taps are normalised to sum to 1 (exact DC gain). At 16 kHz the
  response is flat within 0.02 dB up to 5 kHz for factors in [0.9, 1.1], and everything else the
  interpolation adds is more than 70 dB below a tone there; a factor of 1 still low-passes the
  top 10 % of the band.

  The per-example cutoff and fractional position only change the filter's values, never a shape:
  the position n * factor is split into an integer sample and a fraction once, and the sines of
  the sinc and the cosines of the window at each tap come from those of the fraction by angle
  addition, so each tap costs a gather and a few multiplications.
  """
  length = waveforms.shape[1]
  factors = factors.astype(jnp.float32)[:, None]
  # n * factor = n + n * (factor - 1): the second term is small, so its fraction keeps precision.
  offset = jnp.arange(length, dtype=jnp.float32)[None, :] * (factors - 1.0)
  whole = jnp.floor(offset)
  fraction = offset - whole  # in [0, 1)
  padded = jnp.pad(waveforms.astype(jnp.float32), ((0, 0), (half_taps, half_taps)))
  start = jnp.arange(length)[None, :] + whole.astype(jnp.int32) + half_taps
  cutoff = SPEED_ROLLOFF * jnp.minimum(1.0, 1.0 / factors)
  sin_sinc, cos_sinc = jnp.sin(jnp.pi * cutoff * fraction), jnp.cos(jnp.pi * cutoff * fraction)
  sin_window = jnp.sin(jnp.pi * fraction / half_taps)
  cos_window = jnp.cos(jnp.pi * fraction / half_taps)
  total = jnp.zeros_like(fraction)
  norm = jnp.zeros_like(fraction)
  for tap in range(1 - half_taps, half_taps + 1):  # taps, not examples: 2 * half_taps fused ops
    distance = fraction - tap  # from the tap to the output position, in (-half_taps, half_taps]
    if tap in (0, 1):
      # |distance| can be tiny here: the angle-addition difference would cancel to noise.
      sine = jnp.sin(jnp.pi * cutoff * distance)
    else:
      angle = jnp.pi * cutoff * tap
      sine = sin_sinc * jnp.cos(angle) - cos_sinc * jnp.sin(angle)
    at_zero = distance == 0
    sinc = jnp.where(at_zero, cutoff, sine / (jnp.pi * jnp.where(at_zero, 1.0, distance)))
    cos_1 = cos_window * math.cos(math.pi * tap / half_taps) + sin_window * math.sin(
        math.pi * tap / half_taps)
    window = 0.34 + cos_1 * (0.5 + 0.16 * cos_1)  # Blackman: .42 + .5 cos(pi u) + .08 cos(2 pi u)
    weight = sinc * window
    index = jnp.clip(start + tap, 0, length + 2 * half_taps - 1)
    total = total + weight * jnp.take_along_axis(padded, index, axis=1)
    norm = norm + weight
  return (total / norm).astype(waveforms.dtype)


def speed(key: jax.Array, waveforms: jax.Array, max_change: float) -> jax.Array:
  """Speed perturbation by a factor uniform in [1 - max_change, 1 + max_change] per example
  (`max_change` < 1), length unchanged (see `resample_by`)."""
  return resample_by(waveforms, draw_speed(key, waveforms.shape[0], max_change))


# ----------------------------------------------------------------------------------------------
# Mixup


def draw_mixup(key: jax.Array, weights: jax.Array, alpha: float) -> tuple[jax.Array, jax.Array]:
  """Mixing weights `lam` `[B]` ~ Beta(alpha, alpha) and partners `[B]` int32.

  The partners are a uniformly random permutation of the real examples (weight > 0) and the
  identity on padded ones (weight 0), whose `lam` is 1: padding is never mixed into a real example
  and stays as it is. Two random orders of the batch put the real examples first (padding after
  them, by index in both); the k-th example of the first order is paired with the k-th of the
  second.
  """
  batch_size = weights.shape[0]
  lam_key, first_key, second_key = jax.random.split(key, 3)
  real = weights > 0
  lam = jnp.clip(jax.random.beta(lam_key, alpha, alpha, (batch_size,), jnp.float32), 0.0, 1.0)
  lam = jnp.where(real, lam, 1.0)
  padded_last = 2.0 + jnp.arange(batch_size, dtype=jnp.float32)

  def order(order_key):
    return jnp.argsort(jnp.where(real, jax.random.uniform(order_key, (batch_size,)), padded_last))

  first, second = order(first_key), order(second_key)
  partner = jnp.zeros(batch_size, jnp.int32).at[first].set(second.astype(jnp.int32))
  return lam, partner


def apply_mixup(waveforms: jax.Array, targets: jax.Array, lam: jax.Array,
                partner: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Example b becomes lam[b] * x[b] + (1 - lam[b]) * x[partner[b]], and so do its targets."""
  def mix(x):
    x = jnp.asarray(x)
    weight = lam.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
    return weight * x + (1 - weight) * x[partner]

  return mix(waveforms), mix(targets)


def mixup(key: jax.Array, waveforms: jax.Array, targets: jax.Array, alpha: float,
          weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Mixup (Zhang et al. 2018) of waveforms and one-hot or soft `targets` `[B, C]` with one
  Beta(alpha, alpha) weight per example, among the examples of positive `weights` only (all when
  None); see `draw_mixup`. Returns the mixed waveforms and targets."""
  if weights is None:
    weights = jnp.ones(waveforms.shape[0], jnp.float32)
  return apply_mixup(waveforms, targets, *draw_mixup(key, weights, alpha))


def soft_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                       double_softmax: bool = False) -> jax.Array:
  """Weighted mean softmax cross-entropy against soft `targets` `[B, C]` (rows summing to 1);
  padded examples have weight 0. Equals `train.cross_entropy` when the targets are one-hot."""
  if double_softmax:
    logits = jax.nn.softmax(logits)
  losses = optax.softmax_cross_entropy(logits, targets)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# ----------------------------------------------------------------------------------------------
# Settings and the batch-level entry point


@dataclasses.dataclass(frozen=True)
class Settings:
  """The enabled augmentations (a zero or None turns one off); hashable, a static jit argument.

  Attributes:
    gain_db: gains uniform in [-gain_db, gain_db] dB.
    shift_samples: zero-filled shifts uniform in [-shift_samples, shift_samples].
    noise_snr_db: (low, high) dB of the additive noise's SNR; None: no noise.
    noise_dir: folder of noise recordings (`load_noise_clips`); None: Gaussian white noise.
    speed: speed factors uniform in [1 - speed, 1 + speed].
    mixup_alpha: Beta(alpha, alpha) mixup weights.
    num_classes: width of the soft `targets` that mixup adds.
  """
  gain_db: float = 0.0
  shift_samples: int = 0
  noise_snr_db: tuple[float, float] | None = None
  noise_dir: str | None = None
  speed: float = 0.0
  mixup_alpha: float = 0.0
  num_classes: int = 0

  @property
  def enabled(self) -> bool:
    return bool(self.gain_db or self.shift_samples or self.noise_snr_db or self.speed
                or self.mixup_alpha)


def step_key(key: jax.Array, step) -> jax.Array:
  """The augmentation key of optimiser step `step` from the run's (typed) key: derived like the
  step's dropout key `fold_in(key, step)` and then folded with `AUGMENT_STREAM`, so it is a
  function of (key, step) alone and distinct from the dropout key."""
  return jax.random.fold_in(jax.random.fold_in(key, step), AUGMENT_STREAM)


def augment(key: jax.Array, batch: dict, settings: Settings,
            noise: jax.Array | None = None) -> dict:
  """The train-step batch `{waveforms [B, T], labels [B], weights [B]}` with the augmentations of
  `settings` applied in the order speed, shift, gain, noise, mixup.

  With mixup on, the result also holds `targets` `[B, num_classes]`: the mixed one-hot labels
  (train with `soft_cross_entropy`); `labels` are left as they are. `noise`: the `[M, T_noise]`
  clips of `settings.noise_dir` (required when it is set); None: Gaussian white noise. With nothing
  enabled the batch is returned as is.
  """
  if settings.noise_dir is not None and settings.noise_snr_db is not None and noise is None:
    raise ValueError(f"settings.noise_dir={settings.noise_dir!r} needs the clips from "
                     "load_noise_clips as `noise`")
  if not settings.enabled:
    return batch
  speed_key, shift_key, gain_key, noise_key, mixup_key = jax.random.split(key, 5)
  batch = dict(batch)
  waveforms = batch["waveforms"]
  if settings.speed:
    waveforms = speed(speed_key, waveforms, settings.speed)
  if settings.shift_samples:
    waveforms = time_shift(shift_key, waveforms, settings.shift_samples)
  if settings.gain_db:
    waveforms = gain(gain_key, waveforms, settings.gain_db)
  if settings.noise_snr_db is not None:
    waveforms = add_noise(noise_key, waveforms, settings.noise_snr_db, noise)
  if settings.mixup_alpha:
    targets = jax.nn.one_hot(batch["labels"], settings.num_classes, dtype=jnp.float32)
    waveforms, batch["targets"] = mixup(mixup_key, waveforms, targets, settings.mixup_alpha,
                                        batch["weights"])
  batch["waveforms"] = waveforms
  return batch


# ----------------------------------------------------------------------------------------------
# Config


FIELD = "config.train.augment"


# The fields of `config.train.augment` (their defaults: `wavejax.config.augment_config`).
CONFIG_FIELDS = ("gain_db", "shift_seconds", "noise_snr_db", "noise_dir", "speed", "mixup_alpha")


def settings_from_config(section, num_classes: int, sample_rate: int) -> Settings:
  """`Settings` from `config.train.augment` (a ConfigDict or dict; None: all off), checking every
  value with a one-line `ConfigError` naming the field."""
  known = set(CONFIG_FIELDS)
  section = {} if section is None else dict(section.items())
  unknown = sorted(set(section) - known)
  if unknown:
    raise errors.ConfigError(f"{FIELD}.{unknown[0]} is not a known field; choose from "
                             f"{', '.join(sorted(known))}")
  gain_db = _number(section, "gain_db", "a number of dB >= 0")
  shift_seconds = _number(section, "shift_seconds", "a number of seconds >= 0")
  speed_change = _number(section, "speed", "a fraction in [0, 1), e.g. 0.1 for +-10 %", below=1.0)
  mixup_alpha = _number(section, "mixup_alpha", "a number >= 0 (0: off)")
  noise_snr_db = _snr_range(section.get("noise_snr_db", ()))
  noise_dir = section.get("noise_dir")
  if noise_dir is not None:
    if not isinstance(noise_dir, str) or not noise_dir:
      raise errors.ConfigError(f"{FIELD}.noise_dir={noise_dir!r} must be a folder path or None")
    if noise_snr_db is None:
      raise errors.ConfigError(f"{FIELD}.noise_dir is set but {FIELD}.noise_snr_db is () (off); "
                               "set noise_snr_db=(low, high) in dB")
  if mixup_alpha and not (isinstance(num_classes, int) and num_classes >= 1):
    raise errors.ConfigError(f"{FIELD}.mixup_alpha={mixup_alpha} needs the task's classes "
                             f"(got {num_classes!r})")
  return Settings(gain_db=gain_db, shift_samples=round(shift_seconds * sample_rate),
                  noise_snr_db=noise_snr_db, noise_dir=noise_dir, speed=speed_change,
                  mixup_alpha=mixup_alpha, num_classes=int(num_classes))


def _number(section: dict, name: str, what: str, below: float = math.inf) -> float:
  value = section.get(name, 0.0)
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not 0 <= value < below):  # also rejects NaN and infinity
    raise errors.ConfigError(f"{FIELD}.{name}={value!r} must be {what}")
  return float(value)


def _snr_range(value) -> tuple[float, float] | None:
  if value is None or (isinstance(value, (tuple, list)) and not value):
    return None
  if (isinstance(value, (tuple, list)) and len(value) == 2
      and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              for v in value)
      and value[0] <= value[1]):
    return float(value[0]), float(value[1])
  raise errors.ConfigError(f"{FIELD}.noise_snr_db={value!r} must be () (off) or (low, high) in "
                           "dB with low <= high")


# ----------------------------------------------------------------------------------------------
# Noise recordings


def load_noise_clips(folder, sample_rate: int, clip_samples: int) -> np.ndarray:
  """Every audio file under `folder` (recursively, sorted) as float32 clips `[M, clip_samples]`.

  Files are decoded as the corpora are (`audio.read`: mono, at `sample_rate`). A file of at least
  `clip_samples` gives its consecutive whole clips (the remainder is dropped); a shorter one is
  tiled to one clip. Silent clips are left out. M grows with the folder's total duration, and the
  array is meant to sit on the device next to the model: pick a folder of the size to keep.

  Raises:
    DatasetError: the folder is missing or holds no audio file, or a file cannot be decoded or is
      silent throughout (the message names it).
  """
  root = pathlib.Path(folder).expanduser()
  where = f"noise folder {root} ({FIELD}.noise_dir)"
  if not root.is_dir():
    raise errors.DatasetError(f"{where} is not a directory; set {FIELD}.noise_dir to a folder of "
                              "noise recordings")
  files, notes = corpus.walk(root, corpus.AUDIO_SUFFIXES)
  for note in notes:
    logging.warning("%s: %s", where, note)
  if not files:
    raise errors.DatasetError(f"{where} holds no audio files "
                              f"({', '.join(corpus.AUDIO_SUFFIXES)}); add recordings or unset it")
  clips = []
  for path in files:
    try:
      waveform = audio.read(path, sample_rate)
    except errors.AudioError as e:
      what = str(e)
      raise errors.DatasetError(f"{what[:what.rfind('; ')] if '; ' in what else what}; replace "
                                f"or remove it from the {where}") from e
    if waveform.shape[0] < clip_samples:
      waveform = np.resize(waveform, clip_samples)
    whole = waveform[:waveform.shape[0] // clip_samples * clip_samples]
    usable = [clip for clip in whole.reshape(-1, clip_samples) if not audio.is_silent(clip)]
    if not usable:
      raise errors.DatasetError(f"{path}: silent throughout; replace or remove it from the "
                                f"{where}")
    clips.extend(usable)
  logging.info("%s: %d clips of %d samples from %d files", where, len(clips), clip_samples,
               len(files))
  return np.stack(clips).astype(np.float32, copy=False)
