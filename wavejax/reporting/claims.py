"""The paper's claims about Table 1 (Sec. 4.2), each ruled on from per-utterance predictions.

A claim compares models on one task through one or more pairs (A, B):

- `GREATER`: A's test WA is higher than B's, for every pair (`stats.paired_difference`);
- `OVERFITS_MORE`: A's train - test gap is larger than B's, for every pair
  (`stats.gap_difference`; training accuracy of the selected model minus its test WA);
- `SIMILAR`: A and B are within `margin` of each other, for every pair (an equivalence claim: a
  pair is within the margin when its whole interval lies inside [-margin, +margin], and outside it
  when its whole interval lies beyond).

Each pair gets its difference in points, a 95 % paired bootstrap interval and a verdict, and,
for accuracies, the UA difference and McNemar's exact p-value beside it. A claim is *supported*
when every pair is, *contradicted* when any pair is, and *undecided* otherwise. A (model, task)
enters with its validation-chosen learning rate (`paper_table.summarize_grid`) and every seed
whose folds all have `predictions.csv`; its runs without them are listed, not guessed.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from wavejax.reporting import predictions, stats

GREATER, OVERFITS_MORE, SIMILAR = "greater", "overfits_more", "similar"
NAMES = {"soundnet": "SoundNet", "wavernn": "WaveRNN", "simplenet_rnn": "SimpleNet-RNN",
         "simplenet_cnn": "SimpleNet-CNN", "specnet": "SpecNet"}
CONFIDENCE = 0.95
NUM_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
NOT_RULED = "not ruled"


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of the paper: `kind` holds for every pair (A, B) of `pairs` on `task`."""
  key: str
  source: str
  text: str
  task: str
  kind: str
  pairs: tuple[tuple[str, str], ...]
  margin: float = 0.0

  @property
  def models(self) -> set[str]:
    return {model for pair in self.pairs for model in pair}


_WAVEFORM = ("soundnet", "wavernn", "simplenet_rnn", "simplenet_cnn")
CLAIMS = (
    Claim("best_on_emotion", "Table 1", "SimpleNet-CNN is the best model on emotion", "emotion",
          GREATER, tuple(("simplenet_cnn", b) for b in
                         ("soundnet", "wavernn", "simplenet_rnn", "specnet"))),
    Claim("insight_1", "Sec. 4.2, insight 1", "SimpleNet-RNN beats WaveRNN on emotion (same LSTM "
          "head: SimpleNet's front-end is the better one)", "emotion", GREATER,
          (("simplenet_rnn", "wavernn"),)),
    Claim("insight_2", "Sec. 4.2, insight 2", "SimpleNet-CNN beats SpecNet on emotion (trainable "
          "filters beat the fixed ones they start from)", "emotion", GREATER,
          (("simplenet_cnn", "specnet"),)),
    Claim("insight_3", "Sec. 4.2, insight 3", "SimpleNet-CNN beats SimpleNet-RNN on emotion (same "
          "front-end: the CNN head is the better one)", "emotion", GREATER,
          (("simplenet_cnn", "simplenet_rnn"),)),
    Claim("insight_4", "Sec. 4.2, insight 4", "SoundNet and WaveRNN overfit more than the "
          "SimpleNets on emotion (train - test gap)", "emotion", OVERFITS_MORE,
          tuple((a, b) for a in ("soundnet", "wavernn") for b in ("simplenet_rnn",
                                                                  "simplenet_cnn"))),
    Claim("similar_on_gender", "Table 1", "the waveform models are within 3 points of each other "
          "on gender", "gender", SIMILAR,
          tuple((a, b) for i, a in enumerate(_WAVEFORM) for b in _WAVEFORM[i + 1:]), margin=0.03),
)


def name(model: str) -> str:
  return NAMES.get(model, model)


def pair_verdict(claim: Claim, difference: stats.Difference) -> str:
  if claim.kind != SIMILAR:
    return difference.verdict
  if -claim.margin < difference.low and difference.high < claim.margin:
    return "supported"
  if difference.low > claim.margin or difference.high < -claim.margin:
    return "contradicted"
  return "undecided"


def combined_verdict(verdicts: Sequence[str]) -> str:
  """Every pair supported: supported; any contradicted: contradicted; else undecided."""
  if all(v == "supported" for v in verdicts):
    return "supported"
  return "contradicted" if "contradicted" in verdicts else "undecided"


def load_run(fold_dirs: Mapping[int, Mapping[int, pathlib.Path]],
             train_accuracy: Mapping[tuple[int, int], float]) -> stats.Run:
  """{seed: {fold: FoldPredictions}} from each fold folder's `predictions.csv` (selected epoch,
  test split), with `train_accuracy[(seed, fold)]` from its result."""
  return {seed: {fold: stats.FoldPredictions.from_predictions(
      predictions.read_split(directory / predictions.FILENAME, "selected", "test"),
      train_accuracy[(seed, fold)]) for fold, directory in folds.items()}
          for seed, folds in fold_dirs.items()}


def _pair(claim: Claim, run_a: stats.Run, run_b: stats.Run) -> dict:
  options = dict(num_resamples=NUM_RESAMPLES, seed=BOOTSTRAP_SEED, confidence=CONFIDENCE)
  if claim.kind == OVERFITS_MORE:
    difference, extra = stats.gap_difference(run_a, run_b, **options), {}
  else:
    difference = stats.paired_difference(run_a, run_b, "wa", **options)
    extra = {"ua": stats.paired_difference(run_a, run_b, "ua", **options).to_json()}
    if difference.paired_seeds:
      extra["mcnemar"] = stats.mcnemar(run_a, run_b).to_json()
  return {"difference": difference, "verdict": pair_verdict(claim, difference), **extra}


def rule(claim: Claim, runs: Mapping[tuple[str, str], stats.Run]) -> dict:
  """The claim's pairs with their differences and verdicts, and its own verdict; "not ruled"
  (with the reason) when a model of it has no run with predictions on its task."""
  absent = sorted(m for m in claim.models if (m, claim.task) not in runs)
  if absent:
    return {"claim": claim, "verdict": NOT_RULED, "pairs": [],
            "reason": f"no {claim.task} predictions of {', '.join(name(m) for m in absent)}"}
  pairs = [{"a": a, "b": b, **_pair(claim, runs[(a, claim.task)], runs[(b, claim.task)])}
           for a, b in claim.pairs]
  return {"claim": claim, "verdict": combined_verdict([p["verdict"] for p in pairs]),
          "pairs": pairs}


def rule_all(runs: Mapping[tuple[str, str], stats.Run], claims: Sequence[Claim] = CLAIMS
             ) -> list[dict]:
  """Each claim that concerns a model of `runs` ({(model, task): Run}), ruled (`rule`)."""
  present = {model for model, _ in runs}
  return [rule(claim, runs) for claim in claims if claim.models & present]


def half_widths(ruled: Sequence[dict], kind: str = GREATER) -> np.ndarray:
  """The interval half-widths (points of WA, or of gap for OVERFITS_MORE) of every pair of the
  claims of `kind` (SIMILAR's pairs count as accuracy differences too)."""
  kinds = {kind, SIMILAR} if kind == GREATER else {kind}
  return np.array([100 * p["difference"].half_width for r in ruled if r["claim"].kind in kinds
                   for p in r["pairs"]])


def to_json(ruled: Sequence[dict]) -> list[dict]:
  out = []
  for r in ruled:
    claim = r["claim"]
    entry = {"key": claim.key, "source": claim.source, "claim": claim.text, "task": claim.task,
             "kind": claim.kind, "verdict": r["verdict"],
             "pairs": [{**p, "difference": p["difference"].to_json()} for p in r["pairs"]]}
    if claim.kind == SIMILAR:
      entry["margin"] = claim.margin
    if "reason" in r:
      entry["reason"] = r["reason"]
    out.append(entry)
  return out


def pair_label(claim: Claim, a: str, b: str) -> str:
  measure = "train - test gap" if claim.kind == OVERFITS_MORE else "test WA"
  return f"{name(a)} - {name(b)} ({claim.task} {measure})"


def _points(x: float) -> str:
  return f"{100 * x:+.1f}"


def _pair_row(claim: Claim, pair: dict, first: bool) -> str:
  d = pair["difference"]
  mcnemar = pair.get("mcnemar")
  p = f"{mcnemar['p_value']:.2g}" if mcnemar else "—"
  ua = _points(pair["ua"]["difference"]) if "ua" in pair else "—"
  label = f"{claim.source}: {claim.text}" if first else ""
  return (f"| {label} | {name(pair['a'])} - {name(pair['b'])} | {_points(d.difference)} | "
          f"[{_points(d.low)}, {_points(d.high)}] | ±{100 * d.half_width:.1f} | {ua} | {p} | "
          f"{pair['verdict']} |")


def markdown(ruled: Sequence[dict]) -> str:
  """The claims section of table1.md: one row per pair, then each claim's verdict."""
  if not ruled:
    return ""
  lines = [
      "", "## The paper's claims on this run", "",
      f"Differences A - B in points: test WA (UA beside it), or the train - test gap for "
      f"overfitting; {100 * CONFIDENCE:g} % paired bootstrap interval ({NUM_RESAMPLES:,} "
      "resamples of seeds, then of test utterances within each fold and class), its half-width "
      "(the smallest difference this run can tell from zero), McNemar's exact p pooled over folds "
      "and seeds. A pair is *supported* when its interval lies above 0 (for \"within 3 points\": "
      "inside ±3), *contradicted* when it lies below (outside), else *undecided*; a claim is "
      "supported when all its pairs are, contradicted when any is.", "",
      "| claim | A - B | difference | 95 % interval | half-width | UA difference | McNemar p "
      "| verdict |", "|---|---|---|---|---|---|---|---|"]
  for r in ruled:
    claim = r["claim"]
    if not r["pairs"]:
      lines.append(f"| {claim.source}: {claim.text} | — | — | — | — | — | — | "
                   f"{NOT_RULED} ({r['reason']}) |")
      continue
    lines += [_pair_row(claim, pair, i == 0) for i, pair in enumerate(r["pairs"])]
    if len(r["pairs"]) > 1:
      lines.append(f"| | **the claim** | | | | | | **{r['verdict']}** |")
  widths = half_widths(ruled)
  if widths.size:
    lines += ["", f"Interval half-widths of the accuracy differences on this run: "
              f"{widths.min():.1f}-{widths.max():.1f} points (median {np.median(widths):.1f}): "
              "a smaller true difference cannot be told from zero with this many test utterances, "
              "folds and seeds."]
  return "\n".join(lines) + "\n"


def _in_points(d: stats.Difference) -> stats.Difference:
  return dataclasses.replace(d, difference=100 * d.difference, low=100 * d.low, high=100 * d.high,
                             value_a=100 * d.value_a, value_b=100 * d.value_b)


def forest_rows(ruled: Sequence[dict]) -> list[tuple[str, stats.Difference, str]]:
  """(label, difference in points, verdict) per pair, for `forest_plot.forest_plot`."""
  return [(f"{r['claim'].source}: {pair_label(r['claim'], p['a'], p['b'])}",
           _in_points(p["difference"]), p["verdict"]) for r in ruled for p in r["pairs"]]
