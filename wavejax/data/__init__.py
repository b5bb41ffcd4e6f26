"""Everything between files on disk and `(waveforms, labels)` arrays. No JAX in this package.

`scan(dataset, root)` turns a dataset root into a `Manifest`; each corpus has its own module with a
`scan(root, **options)` function, registered in `DATASETS`: the emotional-speech corpora
(`iemocap`, `ravdess`, `cremad`, `emodb`; see docs/datasets.md), `manifest` (a CSV/TSV/JSONL/JSON
listing of path, label and optional speaker, session, gender) and `folder` (`root/<label>/*.wav`).
`python -m wavejax.data summary --dataset=<name> --root=<dir>` describes a dataset without training.
"""

from __future__ import annotations

import importlib

from wavejax import errors
from wavejax.data.manifest import EMOTIONS, GENDERS, UNKNOWN, Manifest, Utterance

# config.data.dataset -> module implementing `scan(root, **options) -> Manifest`.
DATASETS = {
    "iemocap": "wavejax.data.iemocap",
    "ravdess": "wavejax.data.ravdess",
    "cremad": "wavejax.data.cremad",
    "emodb": "wavejax.data.emodb",
    "manifest": "wavejax.data.listing",
    "folder": "wavejax.data.folder",
}


def scan(dataset: str, root, **options) -> Manifest:
  """Scans the dataset root with the loader registered under `dataset`."""
  if dataset not in DATASETS:
    raise errors.ConfigError(
        f"config.data.dataset={dataset!r} is not a known dataset; choose one of {sorted(DATASETS)}")
  return importlib.import_module(DATASETS[dataset]).scan(root, **options)


__all__ = ["DATASETS", "EMOTIONS", "GENDERS", "UNKNOWN", "Manifest", "Utterance", "scan"]
