"""Size presets shared by every command: the main CLI
(`--config=configs/x.py:emotion,preset=smoke`), `experiments.table1`, the analyses and the
benchmark (`--preset=NAME`).

A preset names config fields applied to every training run it covers (`fields`), plus each
command's own sizes: more config fields (`command_fields`) or settings that are not config fields,
such as the benchmark's batch or Table 1's seeds (`sizes`; a command's own flag overrides them).
A command accepts only the presets that name it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from wavejax import errors

# The commands that take presets.
MAIN, TABLE1, FILTERS, CHANGE_RATE, ALIASING, BENCHMARK = (
    "main", "table1", "filters", "change_rate", "aliasing", "benchmark")


@dataclasses.dataclass(frozen=True)
class Preset:
  description: str
  commands: tuple[str, ...]
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  command_fields: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  sizes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


PRESETS = {
    "paper": Preset(
        "the configs' own defaults: the paper's 6 s clips, 32 validation utterances, batch 32",
        commands=(MAIN, TABLE1, BENCHMARK),
        sizes={BENCHMARK: dict(batch=32, seconds=6.0, repeats=5, matmul_size=4096)}),
    "builtin": Preset(
        "the built-in corpus sized for a 2-core CPU: 20 utterances per speaker, 2 s clips",
        commands=(MAIN, TABLE1, FILTERS, CHANGE_RATE, ALIASING),
        fields={"data.builtin.utterances_per_speaker": 20, "data.builtin.clip_seconds": 2.0},
        command_fields={
            TABLE1: {"data.val_size": 12, "train.batch_size": 16, "train.num_epochs": 5},
            MAIN: {"data.val_size": 12, "train.batch_size": 16, "train.num_epochs": 5},
            FILTERS: {"data.val_size": 8, "train.num_epochs": 8},
            CHANGE_RATE: {"data.val_size": 8, "train.num_epochs": 6},
        },
        sizes={ALIASING: dict(num_samples=16384, seeds=(0, 1, 2), per_class_per_session=20,
                              clip_seconds=0.5, epochs=6)}),
    "decisive": Preset(
        "the built-in corpus at IEMOCAP's size (550 task utterances per speaker: ~1,100 per "
        "session, 6 s clips), the paper's sizes otherwise, and 3 seeds in Table 1",
        commands=(MAIN, TABLE1),
        fields={"data.builtin.utterances_per_speaker": 550, "data.builtin.clip_seconds": 6.0},
        sizes={TABLE1: dict(seeds=(0, 1, 2))}),
    "smoke": Preset(
        "seconds per training run, for tests: 6 utterances per speaker, 1 s clips, batch 8",
        commands=(MAIN, TABLE1, FILTERS, CHANGE_RATE, ALIASING, BENCHMARK),
        fields={"data.builtin.utterances_per_speaker": 6, "data.builtin.clip_seconds": 1.0,
                "data.val_size": 4, "train.batch_size": 8},
        command_fields={MAIN: {"train.num_epochs": 1}, TABLE1: {"train.num_epochs": 1},
                        FILTERS: {"train.num_epochs": 1}, CHANGE_RATE: {"train.num_epochs": 2}},
        sizes={ALIASING: dict(num_samples=4096, seeds=(0,), per_class_per_session=4,
                              clip_seconds=0.25, epochs=1,
                              models=("simplenet_cnn", "pool_first_stride")),
               BENCHMARK: dict(batch=2, seconds=0.5, repeats=1, matmul_size=256)}),
}


def names(command: str) -> list[str]:
  """The presets `command` accepts."""
  return [name for name, preset in PRESETS.items() if command in preset.commands]


def get(name: str, command: str) -> Preset:
  """The preset `name`, checked to cover `command`."""
  if name not in PRESETS or command not in PRESETS[name].commands:
    raise errors.ConfigError(
        f"preset={name!r} is not a preset of {command}; choose one of {', '.join(names(command))}")
  return PRESETS[name]


def fields(name: str, command: str) -> dict:
  """The dotted config fields that preset `name` sets for `command`'s training runs."""
  preset = get(name, command)
  return {**preset.fields, **preset.command_fields.get(command, {})}


def sizes(name: str, command: str) -> dict:
  """`command`'s own settings under preset `name` (empty when it has none)."""
  return dict(get(name, command).sizes.get(command, {}))


def define_flag(command: str, default: str | None):
  """The `--preset` flag of `command`: an enum of the presets that name it."""
  from absl import flags  # pylint: disable=g-import-not-at-top (flags only for commands)
  listed = "; ".join(f"{name}: {PRESETS[name].description}" for name in names(command))
  return flags.DEFINE_enum("preset", default, names(command), f"Size preset ({listed}).")
