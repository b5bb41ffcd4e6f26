r"""Times grouped train steps (`wavejax.training.group`) against the single step on one device and
checks that a member's first step is its single run's.

For each model and each group size M of `--members`: the single jitted `steps.train_step` and the
grouped step of M members (`group_steps.make_group_train_step`: member i with seed i, one batch per
member), on random batches of `--batch` utterances of `--seconds` s; median of `--repeats` timed
steps after a warm-up. Prints, per row, milliseconds per step, utterances per second per member
and in all, the speed-up of one grouped step over M single steps, the memory XLA reports for the
step (`compiled.memory_analysis()`), `group.member_bytes` x M (the estimate experiments/table1.py
uses) and the device's memory, and the largest relative difference between member 0's first-step
loss and the single step's from the same state and batch.

  python -m experiments.group_check --out=/tmp/group_check.json        # the paper's sizes
  python -m experiments.group_check --models=simplenet_cnn --batch=8 --seconds=1 --members=1,3
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import numpy as np
from absl import flags

from wavejax import atomic, cli, config, runtime
from wavejax.models import create_model
from wavejax.training import group, group_steps, steps

_MODELS = flags.DEFINE_list("models", ["simplenet_cnn", "specnet", "wavernn", "soundnet"],
                            "Models (wavejax.config.get_config names).")
_MEMBERS = flags.DEFINE_list("members", ["1", "3", "9"], "Group sizes.")
_BATCH = flags.DEFINE_integer("batch", 32, "Utterances per member and step.")
_SECONDS = flags.DEFINE_float("seconds", 6.0, "Utterance length in seconds (16 kHz).")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed steps per row, median kept.")
_OUT = flags.DEFINE_string("out", None, "Write the rows as JSON to this path.")

NUM_CLASSES = 4


def median_seconds(step, state, batch, repeats: int) -> float:
  """Median seconds of `step` (state donated and threaded through), after one warm-up step."""
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    began = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - began)
  return statistics.median(times)


def step_bytes(analysis) -> int | None:
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def model_rows(name: str) -> list[dict]:
  cfg = config.get_config(name, "emotion")
  cfg.train.batch_size = _BATCH.value
  model = create_model(cfg.model, num_classes=NUM_CLASSES)
  samples = int(round(16000 * _SECONDS.value))
  per_member = group.member_bytes(cfg, samples, NUM_CLASSES)
  rng = np.random.default_rng(0)
  single_step = jax.jit(steps.train_step, donate_argnums=0)
  rows = []
  for members in (int(m) for m in _MEMBERS.value):
    batch = {"waveforms": rng.normal(size=(members, _BATCH.value, samples)).astype(np.float32),
             "labels": rng.integers(0, NUM_CLASSES, (members, _BATCH.value)).astype(np.int32),
             "weights": np.ones((members, _BATCH.value), np.float32)}
    step, state = group_steps.make_group_train_step(model, cfg, members, num_samples=samples)
    first = group_steps.member_slice(state, 0)  # a copy: the steps donate `state`
    analysis = step.lower(state, batch).compile().memory_analysis()
    state, metrics = step(state, batch)
    single = steps.create_train_state(model, cfg, samples, 1, 1)
    single = single.replace(params=first.params, batch_stats=first.batch_stats, key=first.key)
    one = {k: v[0] for k, v in batch.items()}
    _, own = single_step(single, one)
    own_loss, loss = float(own["loss_sum"]), float(np.asarray(metrics["loss_sum"])[0])
    seconds = median_seconds(step, state, batch, _REPEATS.value)
    single_s = median_seconds(single_step, steps.create_train_state(model, cfg, samples, 1, 1),
                              one, _REPEATS.value)
    rows.append({
        "model": name, "members": members, "ms_per_step": 1e3 * seconds,
        "single_ms_per_step": 1e3 * single_s,
        "utt_per_s_per_member": _BATCH.value / seconds,
        "utt_per_s": members * _BATCH.value / seconds,
        "speedup_over_single_steps": members * single_s / seconds,
        "step_bytes": step_bytes(analysis),
        "estimate_bytes": None if per_member is None else per_member * members,
        "device_bytes": group.device_memory_bytes(),
        "first_loss_relative_difference": abs(loss - own_loss) / max(abs(own_loss), 1e-30),
    })
    print(json.dumps(rows[-1]), flush=True)
  return rows


def main(argv):
  del argv
  runtime.enable_compilation_cache()
  rows = [row for name in _MODELS.value for row in model_rows(name)]
  print(f"device: {jax.devices()[0].device_kind}")
  print("| model | M | ms/step | single ms | utt/s per member | speed-up vs M singles "
        "| step MiB | estimate MiB | first-loss diff |")
  print("|---" * 9 + "|")
  for r in rows:
    mib = lambda b: "?" if b is None else f"{b / 2**20:.0f}"
    print(f"| {r['model']} | {r['members']} | {r['ms_per_step']:.1f} | "
          f"{r['single_ms_per_step']:.1f} | {r['utt_per_s_per_member']:.1f} | "
          f"{r['speedup_over_single_steps']:.2f} | {mib(r['step_bytes'])} | "
          f"{mib(r['estimate_bytes'])} | {r['first_loss_relative_difference']:.1e} |")
  if _OUT.value:
    atomic.atomic_write(_OUT.value, json.dumps({"device": jax.devices()[0].device_kind,
                                                "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
  cli.run(main, "group_check")
