"""The corpus-independent description of a dataset: one `Utterance` record per labelled file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

EMOTIONS = ("neutral", "happy", "sad", "angry")
GENDERS = ("F", "M")


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One labelled audio file.

  Attributes:
    path: absolute path of the audio file.
    utt_id: corpus-unique identifier (e.g. `Ses01F_impro01_M013`).
    session: the cross-validation group the utterance belongs to (IEMOCAP session 1-5).
    speaker: corpus-unique speaker identifier (e.g. `01M`).
    gender: `"F"` or `"M"`.
    emotion: the task label after the corpus' label map (e.g. one of `EMOTIONS`).
    duration_s: duration of the audio file in seconds, read from its header.
  """
  path: str
  utt_id: str
  session: int
  speaker: str
  gender: str
  emotion: str
  duration_s: float


@dataclasses.dataclass(frozen=True)
class Manifest(Sequence[Utterance]):
  """An ordered, immutable list of utterances plus where they came from."""
  utterances: tuple[Utterance, ...]
  dataset: str
  root: str

  def __len__(self) -> int:
    return len(self.utterances)

  def __getitem__(self, index):
    return self.utterances[index]

  def __iter__(self) -> Iterator[Utterance]:
    return iter(self.utterances)

  @property
  def sessions(self) -> tuple[int, ...]:
    """The distinct sessions, sorted."""
    return tuple(sorted({u.session for u in self.utterances}))

  def field(self, name: str) -> list:
    """The value of attribute `name` for every utterance, in order."""
    return [getattr(u, name) for u in self.utterances]
