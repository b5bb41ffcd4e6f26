"""wavejax.training.sweep: shard specs, launcher variables, grid shards, atomic writes, locks."""

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from wavejax import atomic, errors
from wavejax.reporting import results
from wavejax.training import sweep

CELLS = list(itertools.product(["soundnet", "specnet", "wavernn"], ["emotion", "gender"],
                               [1e-5, 1e-4, 1e-3], [0, 1], [1, 2, 3, 4, 5]))


# ---------------------------------------------------------------------------------------------
# Shard specs and launcher variables


@pytest.mark.parametrize("text, index, count", [("0/1", 0, 1), ("3/4", 3, 4), (" 1/2 ", 1, 2)])
def test_parse_shard(text, index, count):
  shard = sweep.parse_shard(text)
  assert (shard.index, shard.count) == (index, count)
  assert str(shard) == f"{index}/{count}"


@pytest.mark.parametrize("text, message", [
    ("", "expected I/N"), ("1", "expected I/N"), ("a/b", "expected I/N"),
    ("0/2/3", "expected I/N"), ("2/2", "outside 0..1"), ("-1/2", "outside 0..1"),
    ("0/0", "must be >= 1")])
def test_parse_shard_rejects(text, message):
  with pytest.raises(errors.SweepError, match=message) as raised:
    sweep.parse_shard(text)
  assert "--shard=" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("env, index, count", [
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_MAX": "3"}, 2, 4),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}, 0, 4),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
      "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, 2, 4),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "5"}, 3, 5),
])
def test_shard_from_slurm(env, index, count):
  shard = sweep.shard_from_env(env)
  assert (shard.index, shard.count) == (index, count)
  assert "SLURM_ARRAY_TASK_ID" in shard.source


def test_shard_from_env_needs_a_count():
  assert sweep.shard_from_env({}) is None
  assert sweep.shard_from_env({"JOB_COMPLETION_INDEX": "3"}, num_shards=4).index == 3
  with pytest.raises(errors.SweepError, match="--num_shards"):
    sweep.shard_from_env({"JOB_COMPLETION_INDEX": "3"})
  with pytest.raises(errors.SweepError, match="--num_shards"):
    sweep.shard_from_env({"SLURM_ARRAY_TASK_ID": "3"})
  assert sweep.shard_from_env({"SLURM_ARRAY_TASK_ID": "3"}, num_shards=8).count == 8
  with pytest.raises(errors.SweepError, match="outside 0..3"):
    sweep.shard_from_env({"JOB_COMPLETION_INDEX": "4"}, num_shards=4)


@pytest.mark.parametrize("env, message", [
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
      "SLURM_ARRAY_TASK_COUNT": "3"}, "not a range"),  # --array=1,3,7
    ({"SLURM_ARRAY_TASK_ID": "x"}, "not an integer"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}, None),
])
def test_shard_from_env_rejects(env, message):
  if message is None:  # --num_shards disagreeing with the array size
    with pytest.raises(errors.SweepError, match="disagree|has 2 tasks"):
      sweep.shard_from_env(env, num_shards=3)
    return
  with pytest.raises(errors.SweepError, match=message):
    sweep.shard_from_env(env)


def test_resolve_shard(monkeypatch):
  for name in list(os.environ):
    if name.startswith("SLURM_") or name == "JOB_COMPLETION_INDEX":
      monkeypatch.delenv(name)
  assert sweep.resolve_shard() == sweep.WHOLE
  monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
  monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
  assert str(sweep.resolve_shard()) == "1/3"
  assert str(sweep.resolve_shard("0/2")) == "0/2"  # the flag wins over the launcher
  with pytest.raises(errors.SweepError, match="disagree"):
    sweep.resolve_shard("0/2", num_shards=3)
  with pytest.raises(errors.SweepError, match="needs this worker's index"):
    sweep.resolve_shard(num_shards=3, environ={})


# ---------------------------------------------------------------------------------------------
# The grid


@pytest.mark.parametrize("count", [1, 2, 3, 7, len(CELLS), len(CELLS) + 5])
def test_shards_partition_the_grid(count):
  grid = sweep.Grid(CELLS, ["model", "task", "lr", "seed", "fold"])
  shards = [grid.shard(sweep.make_shard(i, count, "test")) for i in range(count)]
  taken = [cell for shard in shards for cell in shard]
  assert sorted(taken) == sorted(CELLS) and len(taken) == len(set(taken))
  assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shards_depend_only_on_the_cells():
  shuffled = random.Random(0).sample(CELLS, len(CELLS)) + CELLS[:7]  # with duplicates
  a, b = sweep.Grid(CELLS), sweep.Grid(shuffled)
  assert a.fingerprint() == b.fingerprint() and len(b) == len(CELLS)
  for index in range(4):
    assert a.shard(sweep.Shard(index, 4)) == b.shard(sweep.Shard(index, 4))
  assert sweep.Grid(CELLS[1:]).fingerprint() != a.fingerprint()
  # Consecutive folds of one run go to different workers.
  assert [cell[-1] for cell in a.shard(sweep.Shard(0, 5))][:3] == [1, 1, 1]


def test_describe():
  grid = sweep.Grid(CELLS, ["model", "task", "lr", "seed", "fold"])
  assert grid.describe(grid.cells[0]) == "model=soundnet task=emotion lr=1e-05 seed=0 fold=1"
  lines = grid.describe_many(grid.shard(sweep.Shard(0, 2))[:4])
  assert lines == ["model=soundnet task=emotion lr=1e-05 seed=0 fold=1,3,5",
                   "model=soundnet task=emotion lr=1e-05 seed=1 fold=2"]


# ---------------------------------------------------------------------------------------------
# Atomic files


def test_atomic_write(tmp_path):
  path = tmp_path / "sub" / "result.json"
  atomic.atomic_write(path, "old\n")
  assert path.read_text() == "old\n"
  atomic.atomic_write(path, b"new\n")
  assert path.read_bytes() == b"new\n"
  assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_failed_writer_leaves_nothing(tmp_path):
  path = tmp_path / "result.json"
  with pytest.raises(RuntimeError):
    with atomic.atomic_open(path) as f:
      f.write('{"half": ')
      raise RuntimeError("writer died")
  assert list(tmp_path.iterdir()) == []
  results.write_json(path, {"a": 1})
  with pytest.raises(TypeError):
    results.write_json(path, {"b": object()})  # not serialisable: fails before the rename
  assert json.loads(path.read_text()) == {"a": 1}
  assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_temporary_names_are_unique(tmp_path):
  names = {atomic.temporary_path(tmp_path / "x.json").name for _ in range(100)}
  assert len(names) == 100
  assert all(n.startswith(".x.json.") and n.endswith(".tmp") for n in names)


# ---------------------------------------------------------------------------------------------
# Locks


def write_lock(path, host, pid, age_s=0.0, **extra):
  owner = {"host": host, "pid": pid, "started": time.time() - age_s, "token": "t",
           "pid_namespace": sweep.PID_NAMESPACE, **extra}
  path.write_text(json.dumps(owner))
  os.utime(path, (time.time() - age_s,) * 2)


def dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def test_lock_is_exclusive(tmp_path):
  path = tmp_path / "fold_1" / "running.lock"
  got = []
  barrier = threading.Barrier(8)

  def take():
    barrier.wait()
    got.append(sweep.acquire_lock(path, timeout_s=60))

  threads = [threading.Thread(target=take) for _ in range(8)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  held = [lock for lock in got if lock is not None]
  assert len(held) == 1
  owner = sweep.read_owner(path)
  assert (owner.host, owner.pid) == (sweep.HOST, os.getpid()) and owner.started <= time.time()
  # Another process sees a live lock and leaves it.
  code = ("import sys; from wavejax.training import sweep; "
          "sys.exit(0 if sweep.acquire_lock(sys.argv[1], timeout_s=60) is None else 1)")
  assert subprocess.run([sys.executable, "-c", code, str(path)], check=False).returncode == 0
  held[0].release()
  assert not path.exists()
  again = sweep.acquire_lock(path, timeout_s=60)
  assert again is not None
  again.release()


def test_stale_locks_are_taken_over(tmp_path):
  path = tmp_path / "running.lock"
  write_lock(path, sweep.HOST, dead_pid())  # fresh, but its process on this host has exited
  assert "has exited" in sweep.stale_reason(path, sweep.read_owner(path), 3600)
  lock = sweep.acquire_lock(path, timeout_s=3600)
  assert lock is not None and sweep.read_owner(path).pid == os.getpid()
  lock.release()

  write_lock(path, "elsewhere", dead_pid())  # another host: only its age counts
  assert sweep.acquire_lock(path, timeout_s=3600) is None
  write_lock(path, "elsewhere", 1, age_s=7200)  # old heartbeat
  assert "no heartbeat" in sweep.stale_reason(path, sweep.read_owner(path), 3600)
  lock = sweep.acquire_lock(path, timeout_s=3600)
  assert lock is not None
  lock.release()
  assert not list(tmp_path.iterdir())  # no lock, no .break file


def test_unreadable_lock_is_judged_by_age(tmp_path):
  path = tmp_path / "running.lock"
  path.write_text("")  # a worker that died between creating and writing it
  assert sweep.acquire_lock(path, timeout_s=3600) is None
  os.utime(path, (time.time() - 7200,) * 2)
  lock = sweep.acquire_lock(path, timeout_s=3600)
  assert lock is not None
  lock.release()


def test_heartbeat_and_release(tmp_path):
  path = tmp_path / "running.lock"
  lock = sweep.acquire_lock(path, timeout_s=3600, heartbeat_s=0.05)
  os.utime(path, (time.time() - 7200,) * 2)
  time.sleep(0.3)
  assert time.time() - path.stat().st_mtime < 5  # refreshed
  write_lock(path, "elsewhere", 1)  # taken over meanwhile: release leaves the new owner's lock
  lock.release()
  assert sweep.read_owner(path).host == "elsewhere"


def test_lock_left_by_an_earlier_process_with_my_pid(tmp_path):
  path = tmp_path / "running.lock"
  write_lock(path, sweep.HOST, os.getpid())  # e.g. a restarted container: same host and pid
  lock = sweep.acquire_lock(path, timeout_s=3600)
  assert lock is not None
  assert sweep.acquire_lock(path, timeout_s=3600) is None  # but the lock it holds now is live
  lock.release()


# ---------------------------------------------------------------------------------------------
# A worker's loop


def test_run_cells(tmp_path):
  done = {"a"}
  ran = []
  lock_of = lambda cell: tmp_path / f"{cell}.lock"  # pylint: disable=unnecessary-lambda-assignment
  write_lock(lock_of("b"), "elsewhere", 1)  # held by a live worker on another host

  def run(cell):
    ran.append(cell)
    if cell == "c":
      raise errors.TrainingError("c: the loss became NaN")
    done.add(cell)

  report = sweep.run_cells(["a", "b", "c", "d"], run, is_complete=lambda c: c in done,
                           lock_path=lock_of, lock_timeout_s=3600)
  assert ran == ["c", "d"]
  assert (report.ran, report.complete, report.left) == (["d"], ["a"], ["b"])
  assert report.failed == [("c", "c: the loss became NaN")]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["b.lock"]  # failed cells release


def test_run_cells_waits_for_other_workers(tmp_path):
  done = set()
  lock = tmp_path / "b.lock"
  write_lock(lock, "elsewhere", 1)
  threading.Timer(0.3, lambda: (done.add("b"), lock.unlink())).start()
  report = sweep.run_cells(["a", "b"], done.add, is_complete=lambda c: c in done,
                           lock_path=lambda c: tmp_path / f"{c}.lock", lock_timeout_s=3600,
                           wait=True, poll_s=0.1)
  assert (report.ran, report.complete, report.left) == (["a"], ["b"], [])


def test_preemption_stops_the_worker_and_releases_the_lock(tmp_path):
  def run(cell):
    raise errors.Preempted(f"{cell}: stopped on SIGTERM", 15)

  with pytest.raises(errors.Preempted):
    sweep.run_cells(["a", "b"], run, is_complete=lambda c: False,
                    lock_path=lambda c: tmp_path / f"{c}.lock")
  assert not list(tmp_path.iterdir())


def test_cell_status(tmp_path):
  result, lock = tmp_path / "result.json", tmp_path / "running.lock"
  assert sweep.cell_status(result, lock) == "not started"
  write_lock(lock, "elsewhere", 1)
  assert sweep.cell_status(result, lock).startswith("running on elsewhere pid 1")
  write_lock(lock, sweep.HOST, dead_pid())
  assert sweep.cell_status(result, lock).startswith("stale lock of")
  result.write_text("{}")
  assert sweep.cell_status(result, lock) == "complete"


# ---------------------------------------------------------------------------------------------
# The band task (experiments/aliasing.py) is a grid too


def test_band_task_summary_of_partial_runs():
  from wavejax.analysis import band_task  # pylint: disable=g-import-not-at-top

  def entry(wa):
    return {"test_wa": wa, "val_wa": wa, "best_test_wa": wa, "train_accuracy": 1.0,
            "selected_epoch": 1}

  summary = band_task.summarize({"simplenet_cnn": {1: entry(0.9), 0: entry(0.7)},
                                 "pool_first_stride": {}})
  model = summary["models"]["simplenet_cnn"]
  assert list(summary["models"]) == ["simplenet_cnn"] and model["seeds"] == [0, 1]
  assert model["test_wa"] == [0.7, 0.9] and abs(model["mean"] - 0.8) < 1e-12
  assert band_task.summarize({"simplenet_cnn": {}})["verdict"] == "band task: no run is complete"


@pytest.mark.slow
def test_band_task_shards_and_collect(tmp_path):
  from helpers import REPO  # pylint: disable=g-import-not-at-top
  command = [sys.executable, "-m", "experiments.aliasing", f"--workdir={tmp_path}",
             "--preset=smoke"]
  workers = [subprocess.Popen(command + [f"--shard={i}/2"], cwd=REPO, stderr=subprocess.PIPE,
                              text=True) for i in (0, 1)]
  logs = [w.communicate(timeout=600)[1] for w in workers]
  assert [w.returncode for w in workers] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
  assert [log.count("sweep: running") for log in logs] == [1, 1]
  assert not (tmp_path / "aliasing.json").exists()
  collected = subprocess.run(command + ["--collect"], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
  assert collected.returncode == 0, collected.stderr[-2000:]
  band = json.loads((tmp_path / "aliasing.json").read_text())["band_task"]
  assert sorted(band["models"]) == ["pool_first_stride", "simplenet_cnn"]
  assert "missing" not in band and "sweep: running" not in collected.stderr
