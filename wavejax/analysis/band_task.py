"""A task only an alias-free front-end can solve (paper Sec. 2.2.3, 3), trained with the trainer.

Two classes of band-limited noise whose bands fold onto each other under decimation by 2: at
16 kHz class 0 holds 1.0-1.5 kHz and 5.5-6.0 kHz, class 1 holds 6.5-7.0 kHz and 2.0-2.5 kHz.
Decimating by 2 maps f > 4 kHz to 8 kHz - f, so after it BOTH classes hold 1.0-1.5 and
2.0-2.5 kHz with the same flat spectrum: a front-end that downsamples before it filters sees two
identical distributions (for strided pooling exactly; max pooling's nonlinearity leaves weak
cues), while SimpleNet, which filters at the full rate and pools once (Sec. 3), sees bands that
never overlap. Per-example gains are random (overall -30 to -10 dBFS, each band +-6 dB), so
loudness is a weak cue at most.

`compare` trains several models on this corpus with the normal trainer (`training.FoldTrainer`) for
several seeds and reports their test accuracies (`run_one` is one such run and `summarize` the
report, for sweeps that spread the runs over workers); `PooledInput` turns any zoo model into its
"pool-first" twin (the waveform pooled by 2 before the model, which then runs at half the rate):
with SimpleNet-CNN inside it differs from SimpleNet-CNN only in where the pooling is.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from wavejax import config as wavejax_config
from wavejax import errors, training
from wavejax.analysis import signals
from wavejax.data import folds
from wavejax.data.manifest import Manifest, Utterance
from wavejax.models import create_model
from wavejax.training import parallel, steps

CLASSES = ("low_first", "high_first")
NUM_SESSIONS = 5


def folded(band: tuple[float, float], sample_rate: float, factor: int = 2) -> tuple[float, float]:
  """Where decimation by `factor` puts a band lying in (new Nyquist, 2 x new Nyquist)."""
  rate = sample_rate / factor
  return (rate - band[1], rate - band[0])


def class_bands(sample_rate: float = 16000.0) -> tuple[list, list]:
  """(bands of class 0, bands of class 1), in Hz; each class pairs a low band with the image
  of the other class's low band (see the module docstring)."""
  nyquist = sample_rate / 2.0
  low_a = (nyquist / 8, nyquist * 3 / 16)      # 1.0-1.5 kHz at 16 kHz
  low_b = (nyquist / 4, nyquist * 5 / 16)      # 2.0-2.5 kHz
  return ([low_a, folded(low_b, sample_rate)], [folded(low_a, sample_rate), low_b])


def make_example(label: int, sample_rate: float, num_samples: int,
                 rng: np.random.Generator) -> np.ndarray:
  """One waveform of class `label`: two bands of flat Gaussian noise with random gains."""
  bands = class_bands(sample_rate)[label]
  gains = 10**(rng.uniform(-6, 6, size=len(bands)) / 20)
  x = sum(g * signals.band_noise(lo, hi, sample_rate, num_samples, rng)
          for g, (lo, hi) in zip(gains, bands))
  level = 10**(rng.uniform(-30, -10) / 20)  # overall RMS -30 .. -10 dBFS
  return (x * level / np.sqrt(np.mean(x**2))).astype(np.float32)


def make_corpus(per_class_per_session: int, sample_rate: int = 16000, clip_seconds: float = 1.0,
                seed: int = 0) -> tuple[Manifest, np.ndarray, np.ndarray]:
  """An in-memory corpus of `NUM_SESSIONS` sessions: (manifest, waveforms [N, T], targets [N])."""
  if per_class_per_session < 1:
    raise errors.ConfigError(f"per_class_per_session must be >= 1, got {per_class_per_session}")
  rng = np.random.default_rng(seed)
  num_samples = int(round(sample_rate * clip_seconds))
  records, waveforms, targets = [], [], []
  for session in range(1, NUM_SESSIONS + 1):
    for label in range(len(CLASSES)):
      for index in range(per_class_per_session):
        utt_id = f"band_s{session}_{CLASSES[label]}_{index:03d}"
        records.append(Utterance(f"<memory>/{utt_id}", utt_id, session, f"{session:02d}", "",
                                 "", clip_seconds, label=CLASSES[label]))
        waveforms.append(make_example(label, sample_rate, num_samples, rng))
        targets.append(label)
  manifest = Manifest(tuple(records), dataset="band_task", root="<memory>", label_set=CLASSES)
  return manifest, np.stack(waveforms), np.asarray(targets, np.int32)


def fold_data(manifest: Manifest, waveforms: np.ndarray, targets: np.ndarray, fold: int,
              val_size: int, seed: int) -> training.FoldData:
  """`training.FoldData` of one leave-one-session-out fold of the in-memory corpus; the validation
  utterances come from the training sessions, so the whole test session is tested."""
  split = folds.leave_one_session_out(manifest, fold, targets, val_size=val_size,
                                      val_from="train", seed=seed)
  return training.FoldData(manifest, waveforms, targets, split, CLASSES)


class PooledInput(nn.Module):
  """Pools the waveform by `factor` ("max", "avg" or "stride") before `inner`: a pool-first twin.

  `inner` must be built for `sample_rate / factor` (e.g. `pool_first_config`).
  """
  inner: nn.Module
  factor: int = 2
  kind: str = "max"

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    count = waveforms.shape[1] // self.factor
    blocks = waveforms[:, :count * self.factor].reshape(waveforms.shape[0], count, self.factor)
    if self.kind == "max":
      pooled = blocks.max(axis=-1)
    elif self.kind == "avg":
      pooled = blocks.mean(axis=-1)
    elif self.kind == "stride":
      pooled = blocks[..., 0]
    else:
      raise errors.ConfigError(f"PooledInput.kind={self.kind!r}: choose 'max', 'avg' or 'stride'")
    return self.inner(pooled, train=train)


def pool_first_model(config: ml_collections.ConfigDict, num_classes: int, factor: int = 2,
                     kind: str = "max") -> nn.Module:
  """`config.model` run at `sample_rate / factor` behind a `PooledInput` pooling by `factor`."""
  inner = ml_collections.ConfigDict(config.model.to_dict())
  inner.sample_rate = config.model.sample_rate // factor
  if "frontend" in inner and "fir_high_hz" in inner.frontend and inner.frontend.fir_high_hz:
    inner.frontend.fir_high_hz = min(inner.frontend.fir_high_hz, inner.sample_rate / 2)
  return PooledInput(create_model(inner, num_classes=num_classes), factor, kind)


class ModelTrainer(training.FoldTrainer):
  """`training.FoldTrainer` for a given Flax module instead of the zoo model named by the config.

  The training recipe (optimiser, batches, epochs, selection) is the config's, unchanged.
  """

  def __init__(self, config, data: training.FoldData, model: nn.Module, fold_dir=None):
    super().__init__(config, data, fold_dir)
    state = steps.create_train_state(model, config, data.waveforms.shape[1],
                                     self.steps_per_epoch, self.fold)
    self.state = jax.device_put(state, parallel.replicated(self.mesh))


@dataclasses.dataclass(frozen=True)
class Contender:
  """A model of the comparison: a config and, optionally, a function building a non-zoo module
  from (config, num_classes)."""
  config: ml_collections.ConfigDict
  build: object = None


def train_one(contender: Contender, data: training.FoldData) -> dict:
  """Trains one contender on one fold; its test WA (validation-selected epoch) and more."""
  config = wavejax_config.resolve(contender.config)
  if contender.build is None:
    trainer = training.FoldTrainer(config, data, None)
  else:
    trainer = ModelTrainer(config, data, contender.build(config, len(data.classes)))
  result = trainer.run()
  return {"test_wa": result.test["wa"], "val_wa": result.val["wa"],
          "best_test_wa": result.best_test_wa, "train_accuracy": result.train_accuracy,
          "selected_epoch": result.selected_epoch}


def seed_data(seed: int, per_class_per_session: int = 20, clip_seconds: float = 0.5,
              val_size: int = 8, fold: int = 1) -> training.FoldData:
  """The corpus and split of one seed (both follow the seed)."""
  manifest, waveforms, targets = make_corpus(per_class_per_session, clip_seconds=clip_seconds,
                                             seed=seed)
  return fold_data(manifest, waveforms, targets, fold, val_size, seed)


def run_one(contender: Contender, seed: int, data: training.FoldData) -> dict:
  """One run of the comparison: `contender` trained with `seed` on `seed_data(seed)`."""
  config = ml_collections.ConfigDict(contender.config.to_dict())
  config.seed = int(seed)
  return train_one(dataclasses.replace(contender, config=config), data)


def compare(contenders: dict[str, Contender], seeds, per_class_per_session: int = 20,
            clip_seconds: float = 0.5, val_size: int = 8, fold: int = 1) -> dict:
  """Trains every contender for every seed (corpus, split, init and data order all follow the
  seed) and returns `summarize` of the runs."""
  runs = {name: {} for name in contenders}
  for seed in seeds:
    data = seed_data(seed, per_class_per_session, clip_seconds, val_size, fold)
    for name, contender in contenders.items():
      runs[name][int(seed)] = run_one(contender, seed, data)
  return summarize(runs)


def summarize(runs: dict[str, dict[int, dict]]) -> dict:
  """`{"models": {name: {"seeds", "runs", "test_wa": [...], "mean", "std"}}, "chance", "classes",
  "bands_hz", "verdict"}` from {name: {seed: `run_one` result}}; names without runs are left out."""
  models = {}
  for name, by_seed in runs.items():
    if not by_seed:
      continue
    seeds = sorted(by_seed)
    entries = [by_seed[seed] for seed in seeds]
    accuracies = np.array([e["test_wa"] for e in entries])
    models[name] = {"seeds": seeds, "runs": entries, "test_wa": accuracies.tolist(),
                    "mean": float(accuracies.mean()), "std": float(accuracies.std())}
  summary = {"models": models, "chance": 1.0 / len(CLASSES), "classes": list(CLASSES),
             "bands_hz": [list(map(list, bands)) for bands in class_bands()]}
  summary["verdict"] = band_task_verdict(summary) if models else "band task: no run is complete"
  return summary


def band_task_verdict(summary: dict, reference: str = "simplenet_cnn",
                      pool_first_prefix: str = "pool_first") -> str:
  """The claim: the model that filters at the full rate and pools once (`reference`) beats its
  pool-first twins (names starting with `pool_first_prefix`); other models are listed beside."""
  models = summary["models"]

  def cell(name):
    return f"{name} {models[name]['mean']:.1%} +- {models[name]['std']:.1%}"

  twins = [n for n in models if n.startswith(pool_first_prefix)]
  others = [n for n in models if n != reference and n not in twins]
  head = (f"band task (chance {summary['chance']:.0%}, test WA, mean +- std over "
          f"{len(next(iter(models.values()))['seeds'])} seeds)")
  if reference not in models or not twins:
    return f"{head}: " + ", ".join(cell(n) for n in models)
  holds = all(models[reference]["mean"] > models[n]["mean"] for n in twins)
  text = (f"Sec. 2.2.3/3 {'holds' if holds else 'does not hold'} on the {head}: {cell(reference)} "
          f"vs its pool-first twins " + ", ".join(cell(n) for n in twins))
  if others:
    text += "; beside them " + ", ".join(cell(n) for n in others)
  return text
