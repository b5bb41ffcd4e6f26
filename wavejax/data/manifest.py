"""The corpus-independent description of a dataset: one `Utterance` record per labelled file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

EMOTIONS = ("neutral", "happy", "sad", "angry")
GENDERS = ("F", "M")
# The value of `Utterance.gender` (and `.speaker`) when the data does not say.
UNKNOWN = ""


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One labelled audio file.

  The first seven fields are positional (the original record); `label` and `extra` are optional.

  Attributes:
    path: absolute path of the audio file.
    utt_id: corpus-unique identifier (e.g. `Ses01F_impro01_M013`).
    session: the cross-validation group the utterance belongs to (IEMOCAP session 1-5; for
      corpora without sessions a speaker group 1..k, see `wavejax.data.grouping`).
    speaker: corpus-unique speaker identifier (e.g. `01M`), `UNKNOWN` ("") when not known.
    gender: `"F"`, `"M"`, or `UNKNOWN` ("") when not known.
    emotion: the 4-class emotion (one of `EMOTIONS`), or "" when the corpus label is outside the
      4-class map (e.g. RAVDESS `calm`); the `emotion` task uses only utterances that have one.
    duration_s: duration of the audio file in seconds, read from its header (0.0 when the header
      cannot be read; decoding then reports the file).
    label: the corpus' own full label (e.g. `calm`, `boredom`), or whatever a user manifest says;
      defaults to `emotion`. The `label` task classifies it.
    extra: further fields of the source as JSON-friendly values (e.g. unknown manifest columns,
      RAVDESS intensity); not part of the hash.
  """
  path: str
  utt_id: str
  session: int
  speaker: str
  gender: str
  emotion: str
  duration_s: float
  label: str = ""
  extra: dict = dataclasses.field(default_factory=dict, hash=False)

  def __post_init__(self):
    if not self.label:
      object.__setattr__(self, "label", self.emotion)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Manifest(Sequence[Utterance]):
  """An ordered, immutable list of utterances plus where they came from.

  Attributes:
    utterances: the records, in the loader's order.
    dataset: the registry name of the loader (e.g. `ravdess`).
    root: the dataset root (or manifest file) that was scanned.
    label_set: the corpus' full label set, sorted (e.g. RAVDESS' 8 emotions), fixed by the loader
      even when some labels have no file; empty means "the labels present" (`label_classes`).
    notes: what the loader found but did not use, one line each (files that do not follow the
      corpus' naming, known defective clips, ...); the data summary lists them as problems.
  """
  utterances: tuple[Utterance, ...]
  dataset: str
  root: str
  label_set: tuple[str, ...] = ()
  notes: tuple[str, ...] = ()

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

  @property
  def label_classes(self) -> tuple[str, ...]:
    """The classes of the `label` task: `label_set`, else the sorted distinct labels present."""
    return self.label_set or tuple(sorted({u.label for u in self.utterances}))

  def field(self, name: str) -> list:
    """The value of attribute `name` for every utterance, in order."""
    return [getattr(u, name) for u in self.utterances]

  def replace(self, utterances) -> Manifest:
    """The same manifest (dataset, root, label set, notes) with other utterances."""
    return dataclasses.replace(self, utterances=tuple(utterances))

  def to_dict(self) -> dict:
    """A JSON-friendly dict; `Manifest.from_dict` reverses it."""
    return {"dataset": self.dataset, "root": self.root, "label_set": list(self.label_set),
            "notes": list(self.notes), "utterances": [u.to_dict() for u in self.utterances]}

  @classmethod
  def from_dict(cls, data: dict) -> Manifest:
    return cls(tuple(Utterance(**u) for u in data["utterances"]), dataset=data["dataset"],
               root=data["root"], label_set=tuple(data.get("label_set", ())),
               notes=tuple(data.get("notes", ())))
