r"""Classify audio files with a trained run: `python -m wavejax.predict --workdir=RUN a.wav ...`.

Prints the predicted label and the class probabilities per file (the best-on-validation checkpoint
of the run's fold, `--fold`, default the first fold that has one), or a JSON object with `--json`
(its entries hold the fields of a run's `predictions.csv`: `label`, `predicted` ... see
`wavejax.reporting.predictions`). `--timeline` classifies every clip-length window of long
recordings instead (`wavejax.inference.timeline`): `--hop_seconds=1.5 --out=DIR long.wav`.

From Python: `model = wavejax.load_model("runs/x"); model.predict_files(["a.wav"])`.
"""

from __future__ import annotations

import json

from absl import flags

from wavejax import cli
from wavejax.inference import timeline
from wavejax.inference.model import load_model


def define_flags() -> None:
  """The CLI's flags (defined only when run as a script, so importing this module next to
  another absl program's `--workdir` does not clash)."""
  flags.DEFINE_string("workdir", None, "The training run (its --workdir).")
  flags.DEFINE_integer("fold", None, "Fold whose model to use (default: the first fold with a "
                       "best checkpoint).")
  flags.DEFINE_boolean("json", False, "Print one JSON object instead of text lines.")
  flags.DEFINE_boolean("timeline", False, "Classify every clip-length window of each file; write "
                       "--out/<stem>.timeline.csv, .json and .png (wavejax.inference.timeline).")
  flags.DEFINE_float("hop_seconds", None, "With --timeline: seconds between window starts "
                     "(default: half the run's clip).")
  flags.DEFINE_string("out", ".", "With --timeline: the folder the timelines go to.")


def format_line(entry: dict) -> str:
  probabilities = " ".join(f"{c} {p:.3f}" for c, p in entry["probabilities"].items())
  return f"{entry['path']}: {entry['label']} ({probabilities})"


def main(argv) -> int:
  paths, options = argv[1:], flags.FLAGS
  if options.workdir is None or not paths:
    cli.fail("wavejax", "usage: python -m wavejax.predict --workdir=RUN [--fold=k] [--json | "
             "--timeline [--hop_seconds=s] [--out=DIR]] file.wav ...")
  if options.json and options.timeline:
    cli.fail("wavejax", "--json and --timeline exclude each other; the timeline's JSON goes to "
             "--out")
  loaded = load_model(options.workdir, options.fold)
  if options.timeline:
    for line in timeline.write_timelines(loaded, paths, options.out, options.hop_seconds):
      print(line, flush=True)
    return 0
  entries = loaded.predict_files(paths)
  if options.json:
    print(json.dumps({"workdir": str(loaded.workdir), "fold": loaded.fold, "epoch": loaded.epoch,
                      "classes": list(loaded.classes), "predictions": entries}, indent=2))
  else:
    for entry in entries:
      print(format_line(entry))
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, "wavejax")
