"""experiments/table1.py on the smoke preset: the grid runs, resumes, and picks lr on validation."""

import json
import subprocess
import sys

from helpers import REPO


def run_table(workdir, cache, *extra):
  return subprocess.run(
      [sys.executable, "-m", "experiments.table1", f"--workdir={workdir}", "--preset=smoke",
       "--models=simplenet_cnn", "--tasks=emotion", "--lrs=1e-4,1e-3", "--folds=1,2", *extra],
      cwd=REPO, capture_output=True, text=True, timeout=900,
      env={"WAVEJAX_CACHE": str(cache), "PATH": "/usr/bin:/bin"})


def test_smoke_table_runs_and_resumes(tmp_path):
  done = run_table(tmp_path / "t1", tmp_path / "cache")
  assert done.returncode == 0, done.stderr[-3000:]
  table = json.loads((tmp_path / "t1/table1.json").read_text())["table"]
  entry = table["emotion"]["simplenet_cnn"]
  val = entry["val_wa_by_lr"]
  assert set(val) == {"0.0001", "0.001"}
  assert f"{entry['learning_rate']:g}" == max(sorted(val), key=lambda lr: val[lr])
  assert entry["test_wa"]["n"] == 2
  # The test WA of the chosen lr is the mean of that cell's two fold results.
  cell = tmp_path / f"t1/simplenet_cnn/emotion/lr{entry['learning_rate']:g}/seed0"
  folds = [json.loads((cell / f"fold_{k}/result.json").read_text()) for k in (1, 2)]
  assert abs(entry["test_wa"]["mean"] - sum(f["test"]["wa"] for f in folds) / 2) < 1e-12
  markdown = (tmp_path / "t1/table1.md").read_text()
  assert "simplenet_cnn" in markdown and "52.9 (80.0)" in markdown
  # A second run trains nothing: every fold is read back.
  mtimes = [(cell / f"fold_{k}/result.json").stat().st_mtime_ns for k in (1, 2)]
  again = run_table(tmp_path / "t1", tmp_path / "cache")
  assert again.returncode == 0
  assert mtimes == [(cell / f"fold_{k}/result.json").stat().st_mtime_ns for k in (1, 2)]
  assert "already complete" in again.stderr
