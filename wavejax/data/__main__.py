"""`python -m wavejax.data summary --dataset=<name> --root=<dir>`: describe a dataset, no training.

Prints counts per class, label, gender, session, speaker and fold, sample-rate / channel / format /
duration statistics and every problem found (see `wavejax.data.summary`). Without `--root` and
with `--dataset=iemocap` it describes the built-in corpus. Any other `config.data` field can be
set with `--data.<field>=value` (e.g. `--data.calm_as_neutral=true`, `--data.num_folds=4`).
"""

from __future__ import annotations

import json
import pathlib

from absl import flags
from ml_collections import config_flags

from wavejax import cli, errors
from wavejax import config as wavejax_config
from wavejax.data import DATASETS, pipeline, summary

_DATASET = flags.DEFINE_string("dataset", None, f"Dataset loader: one of {sorted(DATASETS)} "
                               "(default: --data.dataset, iemocap).")
_ROOT = flags.DEFINE_string("root", None, "Dataset root (or manifest file); default: the built-in "
                            "corpus for iemocap.")
_TASK = flags.DEFINE_string("task", "emotion", "Task whose classes and folds are counted: emotion, "
                            "gender or label.")
_JSON = flags.DEFINE_string("json", None, "Also write the summary as JSON to this file.")
_DATA = config_flags.DEFINE_config_dict("data", wavejax_config.base_config().data,
                                        "config.data fields, e.g. --data.num_folds=4.")

USAGE = "usage: python -m wavejax.data summary --dataset=<name> --root=<dir> [--task=emotion]"


def data_config():
  """`--data` with `--dataset` and `--root` applied."""
  data = _DATA.value
  if _DATASET.value is not None:
    data.dataset = _DATASET.value
  if _ROOT.value is not None:
    data.root = _ROOT.value
  return data


def scan_with_problems(data) -> tuple:
  """The full manifest (no task selection, no fold file) and the problems met while scanning.

  A missing audio file stops most loaders under `missing_audio="error"`; here it is reported and
  the scan repeated with "skip" so that everything else can be described too.
  """
  data = data.copy_and_resolve_references()
  with data.unlocked():
    data.fold_assignment = None
  try:
    return pipeline.load_manifest(data), []
  except errors.MissingAudioError as e:
    data.missing_audio = "skip"
    manifest = pipeline.load_manifest(data)
    listed = any("does not exist" in note for note in manifest.notes)  # one note per file
    return manifest, [] if listed else [("missing", str(e))]


def run(command: str) -> dict:
  if command != "summary":
    raise errors.ConfigError(f"unknown command {command!r}; {USAGE}")
  data = data_config()
  manifest, problems = scan_with_problems(data)
  result = summary.summarize(manifest, _TASK.value, clip_seconds=pipeline.clip_seconds(data),
                             num_workers=data.get("num_workers"), problems=problems,
                             fold_assignment=data.get("fold_assignment"))
  print(summary.format_summary(result))
  if _JSON.value:
    path = pathlib.Path(_JSON.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"Summary JSON: {path}")
  return result


def main(argv) -> int:
  if len(argv) != 2:
    cli.fail("wavejax", USAGE)
  run(argv[1])
  return 0


if __name__ == "__main__":
  cli.run(main, "wavejax")
