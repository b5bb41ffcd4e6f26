"""The command line end to end on a tiny built-in corpus, config args and error handling."""

import json
import subprocess
import sys

import pytest

import configs.simplenet_cnn as simplenet_cnn_config
from helpers import REPO, tiny_flags
from wavejax import config as wavejax_config
from wavejax import errors


def main(*args):
  return subprocess.run([sys.executable, "-m", "wavejax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=900)


def test_main_runs_every_fold_and_prints_the_table(tmp_path):
  workdir = tmp_path / "run"
  done = main("--config=configs/simplenet_cnn.py", f"--workdir={workdir}",
              *tiny_flags(tmp_path / "cache", **{"train.num_epochs": 1}))
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["folds"] == [1, 2, 3, 4, 5]
  assert [row["test_session"] for row in summary["per_fold"]] == [1, 2, 3, 4, 5]
  assert "| **mean ± std** |" in done.stdout
  assert (workdir / "summary.md").read_text().strip() in done.stdout
  for fold in range(1, 6):
    result = json.loads((workdir / f"fold_{fold}/result.json").read_text())
    assert result["num_val"] == 4 and 0.0 <= result["test"]["wa"] <= 1.0
  assert "fold 3 epoch 1/1: loss" in done.stderr and "utt/s, data " in done.stderr


def test_bad_root_is_one_line_and_exit_code_1(tmp_path):
  done = main("--config=configs/simplenet_cnn.py:emotion,fold=1", f"--workdir={tmp_path}/w",
              f"--config.data.root={tmp_path}/no_such_corpus")
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1].startswith("wavejax: error: ")
  assert "no_such_corpus" in done.stderr and "Traceback" not in done.stderr


def test_distributed_without_a_cluster_is_one_line(tmp_path):
  done = main("--config=configs/simplenet_cnn.py", f"--workdir={tmp_path}/w", "--distributed")
  assert done.returncode == 1
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("wavejax: error: --distributed: jax.distributed.initialize failed (")
  assert "--coordinator_address=host:port" in last and "Traceback" not in done.stderr


def test_config_arg_selects_task_and_fold():
  config = simplenet_cnn_config.get_config("gender,fold=2")
  assert (config.task, config.fold) == ("gender", 2)
  config = simplenet_cnn_config.get_config("task=emotion,fold=5")
  assert (config.task, config.fold) == ("emotion", 5)
  assert simplenet_cnn_config.get_config().fold is None
  with pytest.raises(errors.ConfigError, match="fold='x'"):
    wavejax_config.parse_arg("fold=x")
  with pytest.raises(errors.ConfigError, match="lr=1"):
    wavejax_config.parse_arg("lr=1")


def test_sample_rate_is_shared_by_data_and_model():
  config = simplenet_cnn_config.get_config()
  config.data.sample_rate = 8000
  assert config.model.sample_rate == 8000


@pytest.mark.parametrize("args, expected", [
    (["--config.nosuch=1"], "--config: no field 'nosuch'"),
    (["--config.train.batchsize=4"], 'Did you mean "batch_size"'),
    (["--config.train.batch_size=abc"], "--config.train.batch_size=abc"),
    (["--nosuchflag=1"], "Unknown command line flag 'nosuchflag'"),
    (["--config=configs/nosuch.py"], "configs/nosuch.py"),
    (["--config=configs/simplenet_cnn.py:emotion,fold=x"], "fold='x' is not an integer"),
    ([], "--config is required"),
    (["stray"], "unexpected arguments"),
    (["--config.train.learning_rate=-1"], "config.train.learning_rate=-1"),
    (["--config.train.select_metric=f1"], "config.train.select_metric='f1'"),
])
def test_command_line_mistakes_are_one_line(tmp_path, args, expected):
  if not any(a.startswith("--config=") for a in args) and args != []:
    args = ["--config=configs/simplenet_cnn.py:emotion,fold=1", *args]
  done = main(*args, f"--workdir={tmp_path}/w")
  lines = [line for line in done.stderr.strip().splitlines()
           if line[:1] not in "IWE" or "error" in line]
  assert done.returncode == 1, done.stderr[-2000:]
  assert "Traceback" not in done.stderr, done.stderr[-2000:]
  assert lines[-1].startswith("wavejax: error: ") and expected in lines[-1], done.stderr[-2000:]
  assert "USAGE" not in done.stderr and len(lines) <= 2
  assert not (tmp_path / "w" / "fold_1" / "config.json").exists()
