"""Faults of a training run: a kill at any file-system event or step resumes to the unbroken
run's numbers; two processes never share a workdir or fold; damaged files are refused in one line
naming them and the fix; a failed save prints one error line; fields that do not change the
numbers do not block a resume, a different corpus does."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, hold_lock, tiny_config, tiny_flags
from wavejax import config as wavejax_config
from wavejax import errors, runtime, training
from wavejax.reporting import results
from wavejax.training import loop, sweep, workspace


@pytest.fixture(scope="module", autouse=True)
def compilation_cache():
  runtime.enable_compilation_cache()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


# ------------------------------------------------------------------------------------------------
# Kill points
#
# The child below is `python -m wavejax.main` with every file-system call that changes the workdir
# or the data cache (open for writing, mkdir, rename, replace, unlink, rmdir, rmtree, and each
# file Orbax or TensorStore's Python side writes), every train step and every evaluation batch
# counted as one event, logged to a file. WAVEJAX_TEST_KILL_AT=N SIGKILLs it right after its N-th
# event; "kind|regex" after the first event of that kind whose path matches.

CHILD = r"""
import builtins, io, os, re, shutil, signal, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
SPEC = os.environ.get("WAVEJAX_TEST_KILL_AT", "")
WATCHED = tuple(os.path.abspath(p) for p in os.environ["WAVEJAX_TEST_WATCH"].split(os.pathsep))
LOG = os.open(os.environ["WAVEJAX_TEST_EVENTS"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
count, deleting = 0, []


def kills(kind, path):
  if SPEC.isdigit():
    return count == int(SPEC)
  wanted, _, pattern = SPEC.partition("|")
  return kind == wanted and re.search(pattern, path) is not None


def event(kind, path=""):
  global count
  count += 1
  os.write(LOG, f"{count}\t{kind}\t{path}\n".encode())
  if SPEC and kills(kind, path):
    os.kill(os.getpid(), signal.SIGKILL)


def watched(path, dir_fd=None):
  if dir_fd is not None:  # rmtree's unlinks, relative to the folder being deleted
    return bool(deleting)
  try:
    return os.path.abspath(os.fsdecode(path)).startswith(WATCHED)
  except TypeError:
    return False


def wrap(module, name, writes=lambda *a, **k: True):
  original = getattr(module, name)

  def wrapper(*args, **kwargs):
    result = original(*args, **kwargs)
    path = args[0] if args else kwargs.get("file", kwargs.get("path"))
    if writes(*args, **kwargs) and watched(path, kwargs.get("dir_fd")):
      event(name, os.fsdecode(path))
    return result

  setattr(module, name, wrapper)


for name in ("rename", "replace", "unlink", "remove", "rmdir", "mkdir"):
  wrap(os, name)
wrap(os, "open", lambda path, flags, *a, **k: bool(flags & (os.O_WRONLY | os.O_RDWR)))
wrap(builtins, "open", lambda file, mode="r", *a, **k: any(c in mode for c in "wax+"))
io.open = builtins.open
rmtree = shutil.rmtree


def counted_rmtree(path, *args, **kwargs):
  inside = watched(path)
  deleting.append(inside or None)
  try:
    return rmtree(path, *args, **kwargs)
  finally:
    deleting.pop()
    if inside:
      event("rmtree", os.fsdecode(path))


shutil.rmtree = counted_rmtree
from wavejax.training import loop
init = loop.FoldTrainer.__init__


def counting_init(self, *args, **kwargs):
  init(self, *args, **kwargs)
  for attribute, kind in (("train_step", "step"), ("eval_step", "eval")):
    def counted(*a, jitted=getattr(self, attribute), kind=kind):
      out = jitted(*a)
      event(kind)
      return out
    setattr(self, attribute, counted)


loop.FoldTrainer.__init__ = counting_init
from wavejax import cli, main
sys.argv = ["wavejax", *sys.argv[3:]]
cli.run(main.main, "wavejax")
"""

KILL_RUN = {"train.num_epochs": 2}  # both epochs improve: best/1 and best/2 are both saved


class Fold:
  """One fold's command, run by the counting child in `workdir` with its own corpus cache."""

  def __init__(self, tmp_path):
    self.tmp_path, self.workdir, self.cache = tmp_path, tmp_path / "run", tmp_path / "cache"
    tmp_path.mkdir(parents=True, exist_ok=True)
    self.script = tmp_path / "child.py"
    self.script.write_text(CHILD)
    self.runs = 0

  def run(self, kill_at: str = ""):
    """Runs the command once; returns (exit code, output, the events it logged)."""
    self.runs += 1
    events = self.tmp_path / f"events_{self.runs}"
    env = {**os.environ, "WAVEJAX_TEST_KILL_AT": kill_at, "WAVEJAX_TEST_EVENTS": str(events),
           "WAVEJAX_TEST_WATCH": os.pathsep.join(map(str, (self.workdir, self.cache)))}
    done = subprocess.run(
        [sys.executable, str(self.script), str(REPO / "tests"), str(REPO),
         "--config=configs/simplenet_cnn.py", "--folds=1", f"--workdir={self.workdir}",
         *tiny_flags(self.cache, **KILL_RUN)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    logged = [line.split("\t") for line in events.read_text().splitlines()] if (
        events.exists()) else []
    return done.returncode, done.stdout + done.stderr, logged


def comparable(workdir):
  """result.json without timings, predictions.csv and summary.json of fold 1 of `workdir`."""
  result = json.loads((workdir / "fold_1/result.json").read_text())
  result.pop("train_utterances_per_s")
  for record in result["history"]:
    for key in ("train_seconds", "data_seconds", "utterances_per_s"):
      record.pop(key)
  return (result, (workdir / "fold_1/predictions.csv").read_text(),
          json.loads((workdir / "summary.json").read_text()))


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
  """What an unbroken run of the kill-point command writes (run in this process)."""
  workdir = tmp_path_factory.mktemp("unbroken")
  config = tiny_config(tmp_path_factory.mktemp("cache"), **KILL_RUN)
  training.cross_validate(config, workdir, [1])
  return comparable(workdir)


def leftovers(workdir):
  return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                if p.name.endswith((".lock", ".tmp", ".break")) or "orbax-checkpoint-tmp" in p.name
                or p.name.startswith(".deleting-"))


# A chain of kills, each rerun of the same command killed at its own point, then one that ends.
# On the way: the corpus being written to the cache, a train step, an evaluation, inside the
# first `latest` save, between the `latest` and `best` saves of epoch 1 (the order that matters:
# before, `best` went first and a kill here made every rerun fail), half-way through deleting the
# previous `latest` (so the rerun finds `best/2` missing and rebuilds it from `latest`), and the
# result being written.
KILL_CHAIN = [
    ("replace", r"decoded/.*\.tmp$"),
    ("step", ""),
    ("eval", ""),
    ("open", r"latest/6\.orbax-checkpoint-tmp/state\.orbax-checkpoint-tmp/_METADATA$"),
    ("rename", r"latest/6\.orbax-checkpoint-tmp$"),
    ("unlink", r"manifest\.ocdbt$"),
    ("open", r"\.result\.json\..*\.tmp$"),
]


def test_kills_at_representative_points_resume_to_the_unbroken_numbers(tmp_path, unbroken):
  fold = Fold(tmp_path)
  killed_at = []
  for kind, pattern in KILL_CHAIN:
    code, output, logged = fold.run(f"{kind}|{pattern}")
    assert code == -signal.SIGKILL, f"not killed at {kind} {pattern}: {output[-3000:]}"
    killed_at.append(logged[-1][1:])
  assert [kind for kind, _ in killed_at] == [kind for kind, _ in KILL_CHAIN]
  code, output, _ = fold.run()
  assert code == 0, output[-3000:]
  assert "Traceback" not in output
  assert comparable(fold.workdir) == unbroken
  assert leftovers(fold.workdir) == []


@pytest.mark.slow
def test_a_kill_after_any_event_resumes_to_the_unbroken_numbers(tmp_path, unbroken):
  """Every event of a fresh run (about 260 on the tiny config, ~20 s each: over an hour on two
  cores; WAVEJAX_TEST_KILL_STRIDE=k tries every k-th): kill there, rerun, compare."""
  reference = Fold(tmp_path / "reference")
  code, output, logged = reference.run()
  assert code == 0, output[-3000:]
  stride = int(os.environ.get("WAVEJAX_TEST_KILL_STRIDE", "1"))
  failures = []
  for number in range(1, len(logged) + 1, stride):
    (tmp_path / "progress").write_text(f"{number} of {len(logged)}\n")
    fold = Fold(tmp_path / f"kill_{number}")
    code, output, killed = fold.run(str(number))
    if code != -signal.SIGKILL:
      failures.append(f"{number}: not killed (exit {code})")
      continue
    code, output, _ = fold.run()
    where = f"{number} {killed[-1][1]} {killed[-1][2]}"
    if code != 0:
      failures.append(f"{where}: rerun exit {code}: {output.strip().splitlines()[-1]}")
    elif comparable(fold.workdir) != unbroken:
      failures.append(f"{where}: different numbers")
    elif leftovers(fold.workdir):
      failures.append(f"{where}: left {leftovers(fold.workdir)}")
    shutil.rmtree(fold.tmp_path)
  assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------------------
# One process per workdir and fold


def test_a_held_workdir_or_fold_is_refused_naming_its_holder(cache_dir, tmp_path):
  config = tiny_config(cache_dir, **{"train.num_epochs": 1})
  workdir = tmp_path / "w"
  for locked in (workdir / "running.lock", workdir / "fold_1" / "running.lock"):
    holder = hold_lock(locked)
    try:
      expected = (rf"{re.escape(str(locked.parent))} is in use by {re.escape(sweep.HOST)} pid "
                  rf"{holder.pid} \(lock {re.escape(str(locked))}\); wait for that run to end, or,"
                  rf" if that process is gone, delete {re.escape(str(locked))} and rerun")
      with pytest.raises(errors.LockError, match=expected):
        training.cross_validate(config, workdir, [1])
      with pytest.raises(errors.LockError, match=expected):
        training.train_fold(config, 1, workdir)
      assert not (workdir / "fold_1" / "config.json").exists()
    finally:
      holder.send_signal(signal.SIGKILL)
      holder.wait()
  # The last holder died: its lock is taken over and the fold trains.
  result, _ = training.cross_validate(config, workdir, [1])
  assert result[0].fold == 1 and (workdir / "fold_1/result.json").exists()
  assert not list(workdir.rglob("running.lock"))


def test_two_commands_started_together_do_not_share_the_workdir(cache_dir, tmp_path):
  """Two different configs in one workdir at once: one trains, the other stops with one line
  naming the first (or refusing its config, if the first recorded it already)."""
  training.load_fold_data(tiny_config(cache_dir), 1)  # the corpus cache, before the race
  workdir = tmp_path / "w"
  commands = [[sys.executable, "-m", "wavejax.main", "--config=configs/simplenet_cnn.py",
               "--folds=1", f"--workdir={workdir}",
               *tiny_flags(cache_dir, **{"train.num_epochs": 3, "train.learning_rate": lr})]
              for lr in (1e-3, 1e-4)]
  processes = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for c in commands]
  outputs = [p.communicate(timeout=600) for p in processes]
  codes = sorted(p.returncode for p in processes)
  assert codes == [0, 1], [o[1][-2000:] for o in outputs]
  winner = next(i for i, p in enumerate(processes) if p.returncode == 0)
  loser_errors = [line for line in outputs[1 - winner][1].splitlines() if "error:" in line]
  assert len(loser_errors) == 1 and "Traceback" not in outputs[1 - winner][1]
  assert re.search(rf"is in use by {re.escape(sweep.HOST)} pid {processes[winner].pid} "
                   r"|was written by a different config \(changed: train.learning_rate\)",
                   loser_errors[0]), loser_errors
  recorded = json.loads((workdir / "fold_1/config.json").read_text())
  assert recorded["train"]["learning_rate"] == (1e-3, 1e-4)[winner]
  epochs = [json.loads(line)["epoch"] for line in
            (workdir / "fold_1/metrics.jsonl").read_text().splitlines()]
  assert epochs == [1, 2, 3]
  assert "| 1 | 1 |" in (workdir / "summary.md").read_text() in outputs[winner][0]


# ------------------------------------------------------------------------------------------------
# Damaged files


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
  """A finished 2-epoch run of fold 1 (both epochs improve) and its config."""
  workdir = tmp_path_factory.mktemp("trained")
  config = tiny_config(cache_dir, **KILL_RUN)
  training.cross_validate(config, workdir, [1])
  return workdir, config


def copy_run(trained, tmp_path):
  workdir, config = trained
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  return copy, config


def largest_file(folder):
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def flip_bytes(path, count=64):
  data = bytearray(path.read_bytes())
  for position in np.linspace(len(data) // 4, len(data) - 8, count).astype(int):
    data[position] ^= 0xFF
  path.write_bytes(bytes(data))


def unfinish(workdir):
  """Makes the finished fold 1 look interrupted after its last epoch (no result yet)."""
  (workdir / "fold_1/result.json").unlink()


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta"])
def test_a_damaged_latest_checkpoint_is_named_with_what_deleting_it_does(trained, tmp_path,
                                                                         damage):
  workdir, config = copy_run(trained, tmp_path)
  unfinish(workdir)
  step = workdir / "fold_1/checkpoints/latest/12"
  if damage == "flip":
    flip_bytes(largest_file(step / "state"))
  elif damage == "truncate":
    target = largest_file(step / "state")
    target.write_bytes(target.read_bytes()[:100])
  else:
    (step / "meta/metadata").write_text('{"epoch": 2, "hist')
  with pytest.raises(errors.CheckpointError) as raised:
    training.train_fold(config, 1, workdir)
  message = str(raised.value)
  assert message.startswith(f"{step}: damaged checkpoint (") and "\n" not in message
  assert message.endswith(f"delete {step} and rerun: the fold trains again from its first epoch "
                          "(there is no earlier checkpoint)")
  assert "learning_rate" not in message
  shutil.rmtree(step)  # what the message says: the rerun trains the fold again, to the same end
  training.train_fold(config, 1, workdir)
  assert comparable(workdir)[:2] == comparable(trained[0])[:2]


def test_a_damaged_best_checkpoint_is_rebuilt_from_latest_or_named(trained, tmp_path):
  workdir, config = copy_run(trained, tmp_path)
  unfinish(workdir)
  flip_bytes(largest_file(workdir / "fold_1/checkpoints/best/2/state"))
  # Epoch 2 is both the best and the latest: its weights are in latest/12, and best/2 is rebuilt.
  training.train_fold(config, 1, workdir)
  assert comparable(workdir)[:2] == comparable(trained[0])[:2]
  # A damaged best of an earlier epoch cannot be rebuilt: the error says to train the fold again.
  unfinish(workdir)
  latest = workdir / "fold_1/checkpoints/latest"
  meta = json.loads((latest / "12/meta/metadata").read_text())
  meta["history"][1]["val"]["wa"] = -1.0  # now epoch 1 is the selected one; best/1 is gone
  (latest / "12/meta/metadata").write_text(json.dumps(meta))
  with pytest.raises(errors.CheckpointError, match=re.escape(
      f"{workdir / 'fold_1/checkpoints/best'}: no checkpoint of epoch 1, the best on validation "
      f"(found: [2]); delete {workdir / 'fold_1'} and rerun the training command")):
    training.train_fold(config, 1, workdir)


def test_nan_from_a_damaged_input_is_not_blamed_on_the_learning_rate(cache_dir, tmp_path):
  config = wavejax_config.resolve(tiny_config(cache_dir, **{"train.num_epochs": 1}))
  data = training.load_fold_data(config, 1)
  waveforms = data.waveforms.copy()
  bad = int(data.split.train[5])
  waveforms[bad, 100:200] = np.nan
  data.waveforms = waveforms
  trainer = training.FoldTrainer(config, data, tmp_path / "fold_1")
  with pytest.raises(errors.TrainingError) as raised:
    trainer.run()
  message = str(raised.value)
  assert "the training loss is nan; the input is damaged, not the learning rate: utterance " \
         f"{data.manifest[bad].utt_id} ({data.manifest[bad].path}) has NaN or infinite " \
         "samples" in message and "learning_rate" not in message
  assert not list((tmp_path / "fold_1/checkpoints/latest").glob("[0-9]*"))


@pytest.mark.parametrize("content", ['{"model": "simplenet_cnn", "fold": 1, "val": {"wa"', "",
                                     '{"model": "x"}', None])
def test_a_damaged_result_is_named_with_the_fix(trained, tmp_path, content):
  workdir, config = copy_run(trained, tmp_path)
  path = workdir / "fold_1/result.json"
  if content is None:  # valid JSON, a metric that is not a number
    data = json.loads(path.read_text())
    data["test"]["wa"] = float("nan")
    content = json.dumps(data)
  path.write_text(content)
  expected = (rf"{re.escape(str(path))}: damaged \(.*\); delete it and rerun the command that "
              r"trained it: the fold's result is computed again from its checkpoints")
  for call in (lambda: training.train_fold(config, 1, workdir),
               lambda: training.cross_validate(config, workdir, [1])):
    with pytest.raises(errors.ResultsError, match=expected) as raised:
      call()
    assert "\n" not in str(raised.value)
  path.unlink()  # the fix: the result comes back from the checkpoints, the same numbers
  training.train_fold(config, 1, workdir)
  assert comparable(workdir)[:2] == comparable(trained[0])[:2]


def test_a_damaged_config_record_is_named(trained, tmp_path):
  workdir, config = copy_run(trained, tmp_path)
  (workdir / "fold_1/config.json").write_text('{"model": {"na')
  with pytest.raises(errors.ResultsError, match=re.escape(
      f"{workdir / 'fold_1/config.json'}: damaged (")):
    training.train_fold(config, 1, workdir)
  (workdir / "fold_1/config.json").unlink()  # the fix the message gives: written again
  training.train_fold(config, 1, workdir)
  assert json.loads((workdir / "fold_1/config.json").read_text()) == workspace.config_json(
      wavejax_config.resolve(config))


def test_a_damaged_metrics_line_does_not_stop_the_resume(cache_dir, tmp_path):
  """A line cut short (a full disk, a kill in the middle of the append) is dropped on resume and
  its epoch written again."""
  config = wavejax_config.resolve(tiny_config(cache_dir))
  data = training.load_fold_data(config, 1)
  trainer = training.FoldTrainer(config, data, tmp_path / "fold_1")
  jitted, calls = trainer.train_step, []

  def step(state, batch):  # SIGTERM during epoch 2's third step: saved there, then stopped
    calls.append(None)
    if len(calls) == trainer.steps_per_epoch + 3:
      signal.raise_signal(signal.SIGTERM)
    return jitted(state, batch)

  trainer.train_step = step
  with pytest.raises(errors.Preempted):
    trainer.run()
  log = tmp_path / "fold_1/metrics.jsonl"
  log.write_text(log.read_text() + '{"epoch": 2, "train_lo')
  training.FoldTrainer(config, data, tmp_path / "fold_1").run()
  assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]


# ------------------------------------------------------------------------------------------------
# A failed save


def test_a_failed_save_prints_one_error_line_and_no_traceback(cache_dir, tmp_path):
  config = tiny_config(cache_dir, **KILL_RUN)
  training.train_fold(config, 1)  # the corpus cache and compiled programs, written beforehand
  workdir = tmp_path / "w"
  command = [sys.executable, "-m", "wavejax.main", "--config=configs/simplenet_cnn.py", "--folds=1",
             f"--workdir={workdir}", *tiny_flags(cache_dir, **KILL_RUN)]
  # No file may grow past 64 KiB: writing a checkpoint's arrays fails like a full disk.
  done = subprocess.run(["bash", "-c", 'trap "" XFSZ; ulimit -f 64; exec "$@"', "bash", *command],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1, done.stderr[-3000:]
  error_lines = [line for line in done.stderr.splitlines() if "error:" in line]
  assert len(error_lines) == 1, done.stderr[-5000:]
  assert re.fullmatch(
      rf"wavejax: error: {re.escape(str(workdir))}/fold_1/checkpoints/latest/6: writing the "
      r"checkpoint failed \(.*File too large.*\); the previous one is kept \(there was none\): "
      r"free disk space .*",
      error_lines[0]), error_lines
  assert done.stderr.strip().splitlines()[-1] == error_lines[0]
  assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr
  assert len(done.stderr.splitlines()) < 40, done.stderr[-5000:]


# ------------------------------------------------------------------------------------------------
# Fields that do not change the numbers; the corpus


def test_fields_that_do_not_change_the_numbers_do_not_block_a_resume(cache_dir, tmp_path):
  config = tiny_config(cache_dir)
  fold_dir = tmp_path / "fold_1"
  workspace.record_config(config, fold_dir)
  changed = tiny_config(tmp_path / "elsewhere", **{
      "data.num_workers": 3, "train.tensorboard": True, "train.data_on_device": "never",
      "train.profile_steps": 5, "train.filter_images_every": 2})
  assert workspace.check_config(changed, fold_dir) is False
  moved = tiny_config(cache_dir, **{"data.root": str(tmp_path / "copy")})
  (tmp_path / "folds.json").write_text("{}")
  assert workspace.check_config(moved, fold_dir) is True  # the corpus is compared instead
  for field, value in (("train.batch_size", 4), ("data.val_size", 8), ("seed", 3)):
    with pytest.raises(errors.ConfigError, match=re.escape(field)):
      workspace.check_config(tiny_config(cache_dir, **{field: value}), fold_dir)
  assert set(workspace.IGNORED_FIELDS).isdisjoint(workspace.CORPUS_FIELDS)


def synthetic_corpus(cache_dir):
  return next(p for p in cache_dir.iterdir() if p.name.startswith("synthetic_iemocap"))


def test_a_moved_corpus_resumes_and_a_different_one_is_refused(cache_dir, tmp_path):
  config = tiny_config(cache_dir, **{"train.num_epochs": 1})
  training.load_fold_data(config, 1)
  corpus = synthetic_corpus(cache_dir)
  first, second, other = (tmp_path / name for name in ("first", "second", "other"))
  for copy in (first, second, other):
    shutil.copytree(corpus, copy)
  workdir = tmp_path / "w"
  at = lambda root, **extra: tiny_config(  # pylint: disable=unnecessary-lambda-assignment
      tmp_path / "cache", **{"train.num_epochs": 1, "data.root": str(root),
                             "data.clip_seconds": 1.0, **extra})
  trained, _ = training.cross_validate(at(first), workdir, [1])
  # The same corpus at another path, with another cache and more decoding workers: accepted.
  resumed, _ = training.cross_validate(at(second, **{"data.num_workers": 2}), workdir, [1, 2])
  assert resumed[0] == trained[0] and resumed[1].fold == 2
  # A label changed: refused, naming the corpus and the workdir.
  labels = next((other / "Session2/dialog/EmoEvaluation").glob("*.txt"))
  text = labels.read_text()
  line = next(line for line in text.splitlines() if re.search(r"\t(neu|ang|sad|hap)\t", line))
  swapped = re.sub(r"\t(neu|ang|sad|hap)\t",
                   lambda m: "\tang\t" if m[1] != "ang" else "\tsad\t", line)
  labels.write_text(text.replace(line, swapped))
  with pytest.raises(errors.ConfigError, match=re.escape(
      f"{other}: not the corpus {workdir} was trained on (differs from corpus.json in utterance "
      "ids, sessions, speakers or labels); point config.data.root at that corpus")):
    training.train_fold(at(other), 3, workdir)
  assert not (workdir / "fold_3").exists()


def test_a_signal_after_the_last_step_stops_after_the_fold_is_saved(cache_dir, tmp_path,
                                                                     monkeypatch):
  """SIGTERM during the last evaluation (no step follows to act on it) is not lost: the fold's
  result is written, then the command stops instead of starting the next fold."""
  config = tiny_config(cache_dir, **{"train.num_epochs": 1})
  original = loop.FoldTrainer.fold_result

  def fold_result(self):
    signal.raise_signal(signal.SIGTERM)
    return original(self)

  monkeypatch.setattr(loop.FoldTrainer, "fold_result", fold_result)
  handler = signal.getsignal(signal.SIGTERM)
  with pytest.raises(errors.Preempted, match=re.escape(
      f"stopped by SIGTERM after fold 1 was complete ({tmp_path / 'fold_1/result.json'}); rerun "
      "the same command to continue with the next fold")) as raised:
    training.cross_validate(config, tmp_path, [1, 2])
  assert raised.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is handler
  assert results.load_fold(tmp_path / "fold_1/result.json").fold == 1
  assert not (tmp_path / "fold_2").exists()
