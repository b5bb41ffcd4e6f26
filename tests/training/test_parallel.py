"""Multi-device and multi-process data parallelism: which rows each process loads, and two CPU
processes (jax.distributed over localhost, gloo collectives) giving the numbers of one process with
two devices."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO, tiny_flags
from wavejax.training import parallel


def test_each_process_holds_its_block_of_rows():
  two_hosts = [0, 0, 0, 0, 1, 1, 1, 1]
  assert parallel.host_rows(32, two_hosts, 0) == slice(0, 16)
  assert parallel.host_rows(32, two_hosts, 1) == slice(16, 32)
  four_hosts = [0, 0, 1, 1, 2, 2, 3, 3]
  assert [parallel.host_rows(8, four_hosts, p) for p in range(4)] == [
      slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
  assert parallel.host_rows(8, [0], 0) == slice(0, 8)
  with pytest.raises(ValueError, match="contiguous"):
    parallel.host_rows(8, [0, 1, 0, 1], 0)


def test_one_process_loads_and_places_the_whole_batch():
  mesh = parallel.data_mesh()
  assert parallel.local_rows(mesh, 8) == slice(0, 8)
  batch = {"waveforms": np.arange(16, dtype=np.float32).reshape(8, 2)}
  placed = parallel.put_batch(batch, mesh)
  assert placed["waveforms"].sharding == parallel.batch_sharded(mesh)
  np.testing.assert_array_equal(placed["waveforms"], batch["waveforms"])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def main_command(workdir, cache_dir, *extra, **overrides):
  return [sys.executable, "-m", "wavejax.main", "--config=configs/simplenet_cnn.py", "--folds=1",
          f"--workdir={workdir}", *tiny_flags(cache_dir, **overrides), *extra]


def start_processes(workdir, cache_dir, count=2, **overrides):
  port = free_port()
  return [subprocess.Popen(
      main_command(workdir, cache_dir, f"--coordinator_address=localhost:{port}",
                   f"--num_processes={count}", f"--process_id={i}", **overrides),
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(count)]


def numbers(workdir):
  """A fold result without its timings."""
  result = json.loads((workdir / "fold_1/result.json").read_text())
  for key in ("train_utterances_per_s",):
    result.pop(key)
  for record in result["history"]:
    record.pop("train_seconds"), record.pop("utterances_per_s"), record.pop("data_seconds")
  return result


def two_devices():
  # Two host devices per process: the CPU, selected on any machine (gloo collectives).
  return {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
          "JAX_PLATFORMS": "cpu"}


def test_two_processes_give_the_numbers_of_one_with_two_devices(cache_dir, tmp_path):
  """Each process has one CPU device and loads half of every batch; the run is the one process
  with two devices makes, to the last bit. (The one-process run first also generates the corpus
  that the two processes then share.)"""
  cache = cache_dir
  one = subprocess.run(main_command(tmp_path / "one", cache, **{"train.num_epochs": 1}),
                       cwd=REPO, env=two_devices(), capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  processes = start_processes(tmp_path / "two", cache, **{"train.num_epochs": 1})
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert "process 1 of 2: 1 local of 2 devices" in outputs[1]
  assert "| **mean ± std** |" in outputs[0] and "| **mean ± std** |" not in outputs[1]
  assert numbers(tmp_path / "two") == numbers(tmp_path / "one")


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(cache_dir, tmp_path):
  """JAX's preemption sync service spreads a SIGTERM to every process; they save one checkpoint at
  one step, both exit 143, and the rerun ends with the numbers of an unbroken run."""
  cache, overrides = cache_dir, {"train.num_epochs": 4,
                                          "data.builtin.utterances_per_speaker": 12}
  one = subprocess.run(main_command(tmp_path / "one", cache, **overrides), cwd=REPO,
                       env=two_devices(), capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  processes = start_processes(tmp_path / "two", cache, **overrides)
  latest = tmp_path / "two/fold_1/checkpoints/latest"
  deadline = time.time() + 300
  while not any(p.name.isdigit() for p in latest.glob("*")) and time.time() < deadline:
    time.sleep(0.05)
  processes[1].send_signal(signal.SIGTERM)
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  assert [p.returncode for p in processes] == [143, 143], outputs[0][-3000:] + outputs[1][-3000:]
  where = [re.search(r"preempted by SIGTERM at (fold 1 epoch \d step \d+/12)", o)[1]
           for o in outputs]
  assert where[0] == where[1]
  processes = start_processes(tmp_path / "two", cache, **overrides)
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert numbers(tmp_path / "two") == numbers(tmp_path / "one")
