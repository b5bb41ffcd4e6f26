"""Paired comparisons of two runs on the same test utterances, with bootstrap intervals.

A fold of the built-in corpus tests 28 utterances, so a few points between two models' Table 1
numbers may be noise. This module says how large a difference is and how sure it is.

Inputs. A run (`Run`) maps seed -> fold -> `FoldPredictions` (the utterance ids, integer labels
and predicted classes of one fold's test set, and optionally the selected model's training
accuracy); `FoldPredictions.from_predictions` takes them from a `wavejax.predictions` file. Runs A
and B must cover the same folds with the same test utterances (matched by id, in any order; every
seed of a run tests the same utterances of a fold); a mismatch raises `errors.ResultsError` naming
the
run, seed and fold. A metric (WA, UA, macro-F1, as in `wavejax.reporting.results`) is computed per
(seed,
fold), averaged over folds, then over seeds, as Table 1 aggregates; differences are A minus B.

Seeds. When A and B have the same seeds, seed s of A is paired with seed s of B (same data order
and initialisation) and both sides draw the same seeds in every resample. Otherwise (different
seeds or numbers of seeds) each side's seeds are resampled independently.

The bootstrap of `paired_difference` (hierarchical, percentile interval). Each resample:
1. draws the seeds with replacement (shared by A and B when paired, see above);
2. draws, in every fold, the test utterances with replacement within each class (stratified: each
   class keeps its count, so every class stays present for UA and the class balance is the one
   tested), and uses the SAME draw for A and B (paired: per-utterance agreement between the runs
   cancels) and for every seed (all seeds test the same utterances, so the sampling noise of the
   test set is common to them; drawing per seed would shrink it as 1/seeds);
3. recomputes each side's metric per (seed, fold), the mean over folds and the mean over the drawn
   seeds, and the difference.
The folds themselves are not resampled: they partition the corpus. The interval is the
(1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the resampled differences; its
half-width is the smallest difference the run could tell from zero.

`gap_difference` compares train-minus-test accuracy gaps ("X overfits more than Y"). Training
accuracy is one number per (seed, fold), so there are no utterances to resample: each resample
draws the seeds as above and the folds with replacement, the same folds for every seed and both
runs (every seed trains and tests on the same folds).

`mcnemar` is the exact McNemar test of the per-utterance outcomes: the discordant pairs (A right
and B wrong, A wrong and B right) are pooled over folds and over the paired seeds (seed s of A
against seed s of B). Pooled over seeds it counts an utterance once per seed, as if the seeds'
outcomes were independent; seeds that agree make its p-value too small, so read it beside the
interval, not instead of it. It needs paired seeds.

`group_difference` is the difference of the means of two independent groups of numbers (e.g. the
relative change of high- vs low-frequency filters, or per-seed change rates of two models), each
group resampled with replacement on its own.

`verdict` reads an interval: "supported" (entirely above 0: A > B), "contradicted" (entirely
below 0) or "undecided". Randomness comes from `np.random.default_rng(seed)` only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import special

from wavejax import errors

METRICS = ("wa", "ua", "f1")
VERDICTS = ("supported", "contradicted", "undecided")
# Resample x utterance entries drawn at once: bounds memory (~100 MB) at any corpus size.
_CHUNK_ELEMENTS = 1 << 22
# Above this many discordant pairs the binomial tail is summed in log space.
_EXACT_INTEGER_LIMIT = 50_000


@dataclasses.dataclass(frozen=True)
class FoldPredictions:
  """One fold's test predictions of one seed: `[N]` utterance ids, integer labels and predicted
  classes; `train_accuracy` (for `gap_difference`) is the selected model's training accuracy."""
  utterance_ids: np.ndarray
  labels: np.ndarray
  predicted: np.ndarray
  train_accuracy: float = float("nan")

  def __post_init__(self):
    object.__setattr__(self, "utterance_ids", np.asarray(self.utterance_ids).astype(str))
    object.__setattr__(self, "labels", np.asarray(self.labels, np.int64))
    object.__setattr__(self, "predicted", np.asarray(self.predicted, np.int64))
    object.__setattr__(self, "train_accuracy", float(self.train_accuracy))
    n = len(self.utterance_ids)
    if self.utterance_ids.shape != (n,) or self.labels.shape != (n,) or (
        self.predicted.shape != (n,)):
      raise ValueError(f"utterance_ids, labels and predicted must be 1-D of one length; got "
                       f"{self.utterance_ids.shape}, {self.labels.shape}, {self.predicted.shape}")
    if n and min(self.labels.min(), self.predicted.min()) < 0:
      raise ValueError("labels and predicted must be non-negative class indices")

  @classmethod
  def from_predictions(cls, predictions, train_accuracy: float = float("nan")
                       ) -> FoldPredictions:
    """From a `wavejax.predictions.Predictions` (e.g. `read_split(path, "selected", "test")`)."""
    return cls(predictions.utterance_ids, predictions.labels, predictions.predicted,
               train_accuracy)


Run = Mapping[int, Mapping[int, FoldPredictions]]  # seed -> fold -> predictions


def verdict(interval: tuple[float, float]) -> str:
  """"supported" if the interval lies above 0, "contradicted" if below, else "undecided" (also
  for NaN bounds)."""
  low, high = interval
  if low > 0:
    return "supported"
  if high < 0:
    return "contradicted"
  return "undecided"


@dataclasses.dataclass(frozen=True)
class Difference:
  """A difference (A minus B) with its bootstrap interval.

  Attributes:
    statistic: "wa", "ua", "f1" (`paired_difference`), "gap" (`gap_difference`) or "mean"
      (`group_difference`).
    difference: the observed difference, `value_a - value_b`.
    low, high: the percentile bootstrap interval at `confidence`.
    value_a, value_b: each side's observed value.
    confidence: e.g. 0.95.
    num_resamples: bootstrap resamples.
    sizes: what the data held: `utterances` (test utterances per seed, all folds), `folds`,
      `seeds_a`, `seeds_b`; or `a`, `b` (group sizes).
    paired_seeds: whether A's and B's seeds were paired (None for groups).
  """
  statistic: str
  difference: float
  low: float
  high: float
  value_a: float
  value_b: float
  confidence: float
  num_resamples: int
  sizes: dict
  paired_seeds: bool | None = None

  @property
  def interval(self) -> tuple[float, float]:
    return (self.low, self.high)

  @property
  def half_width(self) -> float:
    """Half the interval's width: about the smallest difference this data could detect."""
    return (self.high - self.low) / 2

  @property
  def verdict(self) -> str:
    return verdict(self.interval)

  @property
  def num_utterances(self) -> int | None:
    return self.sizes.get("utterances")

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), "half_width": self.half_width, "verdict": self.verdict}


@dataclasses.dataclass(frozen=True)
class McNemarResult:
  """Exact McNemar test. `a_only` (b01): utterances A got right and B wrong; `b_only` (b10): the
  reverse; `num_pairs`: every (seed, utterance) pair pooled; `p_value`: two-sided."""
  a_only: int
  b_only: int
  num_pairs: int
  p_value: float

  @property
  def discordant(self) -> int:
    return self.a_only + self.b_only

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), "discordant": self.discordant}


# Alignment of the two runs ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Aligned:
  """Both runs on a common utterance order: per fold, `labels [n]` and `predicted_a [S_a, n]`,
  `predicted_b [S_b, n]`; training accuracies `[S, K]`."""
  seeds_a: list
  seeds_b: list
  folds: list
  labels: list
  predicted_a: list
  predicted_b: list
  train_a: np.ndarray
  train_b: np.ndarray

  @property
  def paired(self) -> bool:
    return self.seeds_a == self.seeds_b

  @property
  def sizes(self) -> dict:
    return {"utterances": int(sum(len(labels) for labels in self.labels)),
            "folds": len(self.folds), "seeds_a": len(self.seeds_a), "seeds_b": len(self.seeds_b)}


def _order(fold: FoldPredictions, position: dict, where: str, reference: str) -> np.ndarray:
  """Indices that put `fold`'s utterances in the reference order; ResultsError on a mismatch."""
  ids = fold.utterance_ids.tolist()
  index = [position.get(u, -1) for u in ids]
  if len(ids) != len(position) or -1 in index or len(set(ids)) != len(ids):
    extra = [u for u in ids if u not in position]
    missing = sorted(set(position) - set(ids))
    example = (f"{extra[0]!r} is not in {reference}" if extra else
               f"{missing[0]!r} is missing" if missing else "an utterance appears twice")
    raise errors.ResultsError(f"{where}: its {len(ids)} test utterances are not the "
                              f"{len(position)} of "
                       f"{reference} ({example}); compare runs evaluated on the same test "
                       "utterances")
  order = np.empty(len(ids), np.int64)
  order[np.asarray(index, np.int64)] = np.arange(len(ids))
  return order


def _align(a: Run, b: Run) -> _Aligned:
  for name, run in (("A", a), ("B", b)):
    if not run or not all(run.values()):
      raise errors.ResultsError(f"run {name} has no seeds or a seed without folds; give each run's "
                         "per-fold test predictions")
  seeds = {"A": sorted(a), "B": sorted(b)}
  folds = sorted(a[seeds["A"][0]])
  for name, run in (("A", a), ("B", b)):
    for seed in seeds[name]:
      if sorted(run[seed]) != folds:
        raise errors.ResultsError(f"run {name}, seed {seed}: folds {sorted(run[seed])} are not "
                                  "run A "
                           f"seed {seeds['A'][0]}'s {folds}; compare runs over the same folds")
  labels, predicted = [], {"A": [], "B": []}
  train = {"A": np.empty((len(seeds["A"]), len(folds))),
           "B": np.empty((len(seeds["B"]), len(folds)))}
  for k, fold in enumerate(folds):
    reference = a[seeds["A"][0]][fold]
    reference_name = f"run A, seed {seeds['A'][0]}, fold {fold}"
    position = {u: i for i, u in enumerate(reference.utterance_ids.tolist())}
    if len(position) != len(reference.utterance_ids):
      raise errors.ResultsError(f"{reference_name}: an utterance id appears twice; give each test "
                         "utterance once")
    if not position:
      raise errors.ResultsError(f"{reference_name}: no test utterances")
    labels.append(reference.labels)
    for name, run in (("A", a), ("B", b)):
      rows = []
      for s, seed in enumerate(seeds[name]):
        where = f"run {name}, seed {seed}, fold {fold}"
        fold_predictions = run[seed][fold]
        order = _order(fold_predictions, position, where, reference_name)
        mismatch = np.flatnonzero(fold_predictions.labels[order] != reference.labels)
        if mismatch.size:
          raise errors.ResultsError(
              f"{where}: utterance {reference.utterance_ids[mismatch[0]]!r} has label "
              f"{fold_predictions.labels[order][mismatch[0]]} where {reference_name} has "
              f"{reference.labels[mismatch[0]]}; both runs must use the same labels and classes")
        rows.append(fold_predictions.predicted[order])
        train[name][s, k] = fold_predictions.train_accuracy
      predicted[name].append(np.stack(rows))
  return _Aligned(seeds["A"], seeds["B"], folds, labels, predicted["A"], predicted["B"],
                  train["A"], train["B"])


# Resampling ------------------------------------------------------------------------------------


def stratified_indices(labels, num_resamples: int, rng: np.random.Generator) -> np.ndarray:
  """`[num_resamples, N]` indices into `labels`: each row replaces every utterance by one drawn
  with replacement from its own class, so `labels[row] == labels` for every row."""
  labels = np.asarray(labels)
  indices = np.empty((num_resamples, len(labels)), np.int64)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    drawn = rng.integers(0, len(members), (num_resamples, len(members)))
    if members[-1] - members[0] + 1 == len(members):  # a contiguous block: no gather needed
      indices[:, members[0]:members[-1] + 1] = drawn + members[0]
    else:
      indices[:, members] = members[drawn]
  return indices


def _counts(indices: np.ndarray, size: int, dtype=np.float32) -> np.ndarray:
  """`[R, size]` how often each index occurs in each row of `indices [R, m]`."""
  rows = len(indices)
  flat = (indices + size * np.arange(rows)[:, None]).ravel()
  return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(dtype)


def _uniform_counts(size: int, num_resamples: int, rng: np.random.Generator) -> np.ndarray:
  """`[R, size]` float64 counts of `size` draws with replacement from `size` items."""
  return _counts(rng.integers(0, size, (num_resamples, size)), size, np.float64)


def _chunks(num_resamples: int, row_size: int):
  step = max(1, _CHUNK_ELEMENTS // max(1, row_size))
  for start in range(0, num_resamples, step):
    yield start, min(num_resamples, start + step)


def _features(labels: np.ndarray, predicted: np.ndarray, metric: str) -> np.ndarray:
  """`[n, Q]` per-utterance 0/1 columns whose weighted sums give `metric` (see `_from_sums`):
  correct for WA; correct x class (true positives) for UA; and predicted-as-class for F1."""
  present = np.unique(labels)
  correct = (predicted == labels).astype(np.float32)  # [M, n]
  if metric == "wa":
    return correct.T
  of_class = (labels[:, None] == present).astype(np.float32)  # [n, P]
  hits = (correct.T[:, :, None] * of_class[:, None, :]).reshape(len(labels), -1)  # [n, M*P]
  if metric == "ua":
    return hits
  as_class = (predicted.T[:, :, None] == present).astype(np.float32).reshape(len(labels), -1)
  return np.concatenate([hits, as_class], axis=1)


def _from_sums(sums: np.ndarray, support: np.ndarray, num_models: int, metric: str) -> np.ndarray:
  """`[R, M]` metric values from the weighted sums `[R, Q]` of `_features`; `support [P]` is the
  number of utterances of each present class (fixed by the stratified resampling)."""
  sums = sums.astype(np.float64)
  if metric == "wa":
    return sums / support.sum()
  per_class = num_models * len(support)
  hits = sums[:, :per_class].reshape(len(sums), num_models, len(support))
  if metric == "ua":
    return (hits / support).mean(axis=-1)
  as_class = sums[:, per_class:].reshape(len(sums), num_models, len(support))
  return (2 * hits / (support + as_class)).mean(axis=-1)  # F1 = 2 TP / (support + predicted)


def _weighted_metric(weights: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                     metric: str) -> np.ndarray:
  """`[R, M]`: the metric of each of M models' `predicted [M, n]` with utterance i counted
  `weights[r, i]` times, the weights keeping each class's count (as stratified resamples do)."""
  support = np.unique(labels, return_counts=True)[1].astype(np.float64)
  sums = np.asarray(weights, np.float32) @ _features(labels, predicted, metric)
  return _from_sums(sums, support, len(predicted), metric)


def _seed_weights(data: _Aligned, num_resamples: int, rng) -> tuple[np.ndarray, np.ndarray]:
  """`[R, S]` draw counts of each side's seeds: one draw for both sides when paired."""
  weights_a = _uniform_counts(len(data.seeds_a), num_resamples, rng)
  if data.paired:
    return weights_a, weights_a
  return weights_a, _uniform_counts(len(data.seeds_b), num_resamples, rng)


def _check_arguments(num_resamples: int, confidence: float) -> None:
  if int(num_resamples) < 1:
    raise ValueError(f"num_resamples={num_resamples}; need at least 1")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence={confidence}; need a number between 0 and 1")


def _interval(differences: np.ndarray, confidence: float) -> tuple[float, float]:
  low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
  return float(low), float(high)


def _side(values: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
  """`[R]` mean over the drawn seeds of `values [R, S]`."""
  return (values * seed_weights).sum(axis=-1) / values.shape[-1]


# Comparisons -----------------------------------------------------------------------------------


def paired_difference(a: Run, b: Run, metric: str = "wa", num_resamples: int = 10000,
                      seed: int = 0, confidence: float = 0.95) -> Difference:
  """Metric of A minus metric of B with its hierarchical paired bootstrap interval (module
  docstring)."""
  if metric not in METRICS:
    raise ValueError(f"metric={metric!r}; expected one of {METRICS}")
  _check_arguments(num_resamples, confidence)
  data = _align(a, b)
  rng = np.random.default_rng(seed)
  seeds_a, seeds_b = len(data.seeds_a), len(data.seeds_b)
  weights_a, weights_b = _seed_weights(data, num_resamples, rng)
  resampled = np.empty((num_resamples, seeds_a + seeds_b, len(data.folds)))
  observed = np.empty((seeds_a + seeds_b, len(data.folds)))
  for k, labels in enumerate(data.labels):
    by_class = np.argsort(labels, kind="stable")  # contiguous classes: faster draws
    labels = labels[by_class]
    predicted = np.concatenate([data.predicted_a[k], data.predicted_b[k]])[:, by_class]
    features = _features(labels, predicted, metric)
    support = np.unique(labels, return_counts=True)[1].astype(np.float64)
    observed[:, k] = _from_sums(features.sum(axis=0, keepdims=True), support, len(predicted),
                                metric)[0]
    for start, stop in _chunks(num_resamples, len(labels)):
      weights = _counts(stratified_indices(labels, stop - start, rng), len(labels))
      resampled[start:stop, :, k] = _from_sums(weights @ features, support, len(predicted),
                                               metric)
  per_seed = resampled.mean(axis=-1)  # [R, S_a + S_b]: mean over folds
  differences = (_side(per_seed[:, :seeds_a], weights_a)
                 - _side(per_seed[:, seeds_a:], weights_b))
  value_a, value_b = observed[:seeds_a].mean(), observed[seeds_a:].mean()
  return Difference(metric, float(value_a - value_b), *_interval(differences, confidence),
                    float(value_a), float(value_b), confidence, int(num_resamples), data.sizes,
                    data.paired)


def gap_difference(a: Run, b: Run, num_resamples: int = 10000, seed: int = 0,
                   confidence: float = 0.95) -> Difference:
  """(train accuracy - test WA) of A minus that of B, with an interval over resampled seeds and
  folds (module docstring). Every `FoldPredictions` needs its `train_accuracy`."""
  _check_arguments(num_resamples, confidence)
  data = _align(a, b)
  gaps = []
  for name, seeds, train, predicted in (("A", data.seeds_a, data.train_a, data.predicted_a),
                                        ("B", data.seeds_b, data.train_b, data.predicted_b)):
    bad = np.argwhere(~np.isfinite(train))
    if bad.size:
      s, k = bad[0]
      raise errors.ResultsError(f"run {name}, seed {seeds[s]}, fold {data.folds[k]}: no training "
                         "accuracy; give FoldPredictions.train_accuracy (result.json's "
                         "train_accuracy) for every fold")
    test = np.stack([(p == labels).mean(axis=-1) for p, labels in zip(predicted, data.labels)],
                    axis=-1)  # [S, K]
    gaps.append(train - test)
  gap_a, gap_b = gaps
  rng = np.random.default_rng(seed)
  weights_a, weights_b = _seed_weights(data, num_resamples, rng)
  folds = _uniform_counts(len(data.folds), num_resamples, rng) / len(data.folds)  # [R, K]
  differences = _side(folds @ gap_a.T, weights_a) - _side(folds @ gap_b.T, weights_b)
  value_a, value_b = gap_a.mean(), gap_b.mean()
  return Difference("gap", float(value_a - value_b), *_interval(differences, confidence),
                    float(value_a), float(value_b), confidence, int(num_resamples), data.sizes,
                    data.paired)


def group_difference(values_a: Sequence[float], values_b: Sequence[float],
                     num_resamples: int = 10000, seed: int = 0, confidence: float = 0.95
                     ) -> Difference:
  """Mean of `values_a` minus mean of `values_b` (two independent groups, two or more finite
  values each), each group resampled with replacement on its own."""
  _check_arguments(num_resamples, confidence)
  groups = []
  for name, values in (("A", values_a), ("B", values_b)):
    values = np.asarray(values, np.float64).ravel()
    if values.size < 2 or not np.isfinite(values).all():
      finite = "" if np.isfinite(values).all() else ", some not finite"
      raise errors.ResultsError(f"group {name}: {values.size} values{finite}; a bootstrap interval "
                         "needs two or more finite values per group")
    groups.append(values)
  rng = np.random.default_rng(seed)
  means = []
  for values in groups:
    resampled = np.empty(num_resamples)
    for start, stop in _chunks(num_resamples, values.size):
      resampled[start:stop] = _uniform_counts(values.size, stop - start, rng) @ values
    means.append(resampled / values.size)
  value_a, value_b = groups[0].mean(), groups[1].mean()
  return Difference("mean", float(value_a - value_b), *_interval(means[0] - means[1], confidence),
                    float(value_a), float(value_b), confidence, int(num_resamples),
                    {"a": int(groups[0].size), "b": int(groups[1].size)}, None)


def binomial_two_sided_p(successes: int, trials: int) -> float:
  """Exact two-sided p-value of `successes` in `trials` under Binomial(trials, 1/2): twice the
  smaller tail, at most 1 (the distribution is symmetric)."""
  if trials < 0 or not 0 <= successes <= trials:
    raise ValueError(f"need 0 <= successes <= trials; got {successes}, {trials}")
  k = min(successes, trials - successes)
  if trials == 0 or 2 * k == trials:
    return 1.0
  if trials <= _EXACT_INTEGER_LIMIT:
    term, tail = 1, 0  # C(trials, i), exact integers
    for i in range(k + 1):
      tail += term
      term = term * (trials - i) // (i + 1)
    return min(1.0, 2 * tail / 2**trials)
  i = np.arange(k + 1)
  log_terms = (special.gammaln(trials + 1) - special.gammaln(i + 1)
               - special.gammaln(trials - i + 1) - trials * math.log(2))
  return float(min(1.0, 2 * np.exp(special.logsumexp(log_terms))))


def mcnemar(a: Run, b: Run) -> McNemarResult:
  """Exact McNemar test of A vs B, discordant pairs pooled over folds and paired seeds (module
  docstring)."""
  data = _align(a, b)
  if not data.paired:
    raise errors.ResultsError("McNemar's test pairs seed s of run A with seed s of run B, but "
                              "A has "
                       f"seeds {data.seeds_a} and B {data.seeds_b}; run both with the same seeds, "
                       "or use paired_difference, which resamples unpaired seeds")
  a_only = b_only = pairs = 0
  for labels, predicted_a, predicted_b in zip(data.labels, data.predicted_a, data.predicted_b):
    right_a, right_b = predicted_a == labels, predicted_b == labels
    a_only += int((right_a & ~right_b).sum())
    b_only += int((~right_a & right_b).sum())
    pairs += right_a.size
  return McNemarResult(a_only, b_only, pairs,
                       binomial_two_sided_p(min(a_only, b_only), a_only + b_only))
