"""Cross-validation groups for corpora without sessions: speaker-grouped, gender-balanced k folds.

`Utterance.session` is the group that `folds.leave_one_session_out` holds out. For corpora with no
sessions each speaker is dealt to one of k groups numbered 1..k: speakers are sorted within each
gender (F, then M, then unknown), optionally shuffled with a seeded generator, and dealt round
robin, the deal continuing across genders. Every group then holds the same number of speakers of
each gender up to one, the group sizes differ by at most one, and the same speakers always give
the same groups. When the speaker is unknown (a plain folder of files) each utterance is its own
unit, stratified by label; such folds are not speaker-independent, which is logged.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from absl import logging

from wavejax import errors
from wavejax.data.manifest import GENDERS, UNKNOWN, Utterance


def natural_key(text) -> tuple:
  """Sort key that orders embedded numbers numerically (`spk2` before `spk10`)."""
  return tuple(int(part) if part.isdigit() else part
               for part in re.split(r"(\d+)", str(text)))


def deal(strata: Mapping[Hashable, str], k: int, seed: int | None = None) -> dict:
  """Assigns every unit (a key of `strata`) to a group 1..k, round robin within each stratum.

  Args:
    strata: unit -> stratum (e.g. speaker -> gender). Strata are dealt in the order F, M, then
      the others sorted; units within a stratum in natural order (or shuffled when `seed` is set).
    k: number of groups.
    seed: None for the sorted order, else the seed of a `numpy.random.default_rng` shuffle.

  Returns:
    unit -> group number in 1..k.
  """
  check_num_folds(k)
  if len(strata) < k:
    raise errors.DatasetError(
        f"only {len(strata)} speakers (or files) to split into {k} folds; lower "
        "config.data.num_folds or add data")
  order = sorted(set(strata.values()), key=lambda s: (_stratum_rank(s), natural_key(s)))
  rng = None if seed is None else np.random.default_rng(seed)
  groups, position = {}, 0
  for stratum in order:
    units = sorted((u for u, s in strata.items() if s == stratum), key=natural_key)
    if rng is not None:
      units = [units[i] for i in rng.permutation(len(units))]
    for unit in units:
      groups[unit] = position % k + 1
      position += 1
  return groups


def speaker_folds(speakers: Sequence[str], genders: Sequence[str], k: int = 5,
                  seed: int | None = None) -> dict[str, int]:
  """Speaker -> group 1..k, gender-balanced and deterministic (see the module docstring).

  `speakers` and `genders` are parallel (one entry per utterance or per speaker); a speaker must
  have one gender throughout.
  """
  gender_of = {}
  for speaker, gender in zip(speakers, genders):
    if gender_of.setdefault(speaker, gender) != gender:
      raise errors.DatasetError(
          f"speaker {speaker!r} is listed as both {gender_of[speaker]!r} and {gender!r}; give "
          "each speaker one gender")
  return deal(gender_of, k, seed)


def assign_groups(utterances: Iterable[Utterance], k: int, seed: int | None = None,
                  what: str = "data") -> list[Utterance]:
  """The utterances with `session` set to their group 1..k.

  Speakers are dealt with `speaker_folds`; utterances whose speaker is unknown are dealt one by
  one, stratified by label (logged: such folds are not speaker-independent).
  """
  utterances = list(utterances)
  strata = {}
  for utt in utterances:
    if utt.speaker != UNKNOWN:
      strata.setdefault(("speaker", utt.speaker), utt.gender)
    else:
      strata[("utterance", utt.utt_id)] = f"label:{utt.label}"
  unknown = sum(1 for utt in utterances if utt.speaker == UNKNOWN)
  if unknown:
    logging.warning("%s: %d utterance(s) have no speaker; they are dealt to folds one by one, so "
                    "those folds are not speaker-independent", what, unknown)
  _check_consistent_genders(utterances)
  groups = deal(strata, k, seed)
  return [dataclasses.replace(utt, session=groups[_unit(utt)]) for utt in utterances]


def check_num_folds(k) -> None:
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
    raise errors.ConfigError(f"config.data.num_folds={k!r} must be an integer >= 2")


def _unit(utt: Utterance):
  return ("speaker", utt.speaker) if utt.speaker != UNKNOWN else ("utterance", utt.utt_id)


def _check_consistent_genders(utterances: list[Utterance]) -> None:
  seen = {}
  for utt in utterances:
    if utt.speaker == UNKNOWN:
      continue
    first = seen.setdefault(utt.speaker, utt)
    if first.gender != utt.gender:
      raise errors.DatasetError(
          f"{utt.path}: speaker {utt.speaker!r} is {utt.gender or 'unknown'!r} here but "
          f"{first.gender or 'unknown'!r} for {first.path}; give each speaker one gender")


def _stratum_rank(stratum) -> int:
  return GENDERS.index(stratum) if stratum in GENDERS else len(GENDERS)
