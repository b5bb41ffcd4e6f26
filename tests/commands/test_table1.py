"""experiments/table1.py on the smoke preset: the grid runs (each (model, task, fold)'s rates as one
group, or with --nogroup every run alone, into the same table), resumes, and picks lr on
validation; shards of it run concurrently, survive a killed or stopped worker, and collect into the
same table."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO
from wavejax.reporting import plots

GRID = ["--preset=smoke", "--models=simplenet_cnn", "--tasks=emotion", "--lrs=1e-4,1e-3",
        "--folds=1,2"]


def table_command(workdir, *extra):
  return [sys.executable, "-m", "experiments.table1", f"--workdir={workdir}", *GRID, *extra]


def table_env(cache):
  env = {"WAVEJAX_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
  if "WAVEJAX_COMPILATION_CACHE" in os.environ:  # set by conftest.py
    env["WAVEJAX_COMPILATION_CACHE"] = os.environ["WAVEJAX_COMPILATION_CACHE"]
  return env


def run_table(workdir, cache, *extra):
  return subprocess.run(table_command(workdir, *extra), cwd=REPO, capture_output=True, text=True,
                        timeout=900, env=table_env(cache))


def start_table(workdir, cache, log, *extra):
  with open(log, "w") as stderr:  # the child keeps its own copy of the descriptor
    return subprocess.Popen(table_command(workdir, *extra), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=stderr, env=table_env(cache))


def table_of(workdir):
  return json.loads((workdir / "table1.json").read_text())


def results_of(workdir) -> dict:
  """{relative fold folder: the result without its timing field}."""
  out = {}
  for path in sorted(workdir.glob("*/*/*/*/fold_*/result.json")):
    result = json.loads(path.read_text())
    result.pop("train_utterances_per_s")
    for record in result["history"]:
      for key in [k for k in record if "per_s" in k or "seconds" in k or "time" in k]:
        record.pop(key)
    out[str(path.parent.relative_to(workdir))] = result
  return out


def leftovers(workdir) -> list:
  """Lock, break and temporary files anywhere in the workdir."""
  return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                if p.name.endswith((".lock", ".break", ".tmp")))


def ran_cells(log_text: str) -> list[str]:
  return [line.split("sweep: running ", 1)[1] for line in log_text.splitlines()
          if "sweep: running " in line]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
  """The smoke grid run by one process (no shard flags, grouped): its workdir and output."""
  workdir = tmp_path_factory.mktemp("reference") / "t1"
  done = run_table(workdir, cache)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, done


@pytest.fixture(scope="module")
def single_reference(tmp_path_factory, cache):
  """The smoke grid with --nogroup: every run on its own."""
  workdir = tmp_path_factory.mktemp("single") / "t1"
  done = run_table(workdir, cache, "--nogroup")
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, done


def test_smoke_table_runs_and_resumes(reference, cache):
  workdir, done = reference
  # Two units of work, fold 1 and fold 2, each training both learning rates as one group.
  assert ran_cells(done.stderr) == [f"model=simplenet_cnn task=emotion fold={k}" for k in (1, 2)]
  assert "4 training runs in 2 groups (model, task, fold)" in done.stderr
  assert len(list(workdir.glob("simplenet_cnn/emotion/group_fold_*/group_*/group.json"))) == 2
  table = table_of(workdir)["table"]
  entry = table["emotion"]["simplenet_cnn"]
  val = entry["val_wa_by_lr"]
  assert set(val) == {"0.0001", "0.001"} and entry["incomplete_lrs"] == []
  assert f"{entry['learning_rate']:g}" == max(sorted(val), key=lambda lr: val[lr])
  assert entry["test_wa"]["n"] == 2
  assert table_of(workdir)["complete"] and table_of(workdir)["missing"] == []
  # The test WA of the chosen lr is the mean of that cell's two fold results.
  cell = workdir / f"simplenet_cnn/emotion/lr{entry['learning_rate']:g}/seed0"
  folds = [json.loads((cell / f"fold_{k}/result.json").read_text()) for k in (1, 2)]
  assert abs(entry["test_wa"]["mean"] - sum(f["test"]["wa"] for f in folds) / 2) < 1e-12
  assert json.loads((cell / "summary.json").read_text())["folds"] == [1, 2]
  markdown = (workdir / "table1.md").read_text()
  assert "simplenet_cnn" in markdown and "52.9 (80.0)" in markdown
  assert "Incomplete" not in markdown
  assert leftovers(workdir) == []
  # A second run trains nothing: every fold is read back.
  mtimes = [(cell / f"fold_{k}/result.json").stat().st_mtime_ns for k in (1, 2)]
  again = run_table(workdir, cache)
  assert again.returncode == 0
  assert mtimes == [(cell / f"fold_{k}/result.json").stat().st_mtime_ns for k in (1, 2)]
  assert "already complete" in again.stderr and not ran_cells(again.stderr)


def test_nogroup_gives_the_same_table(reference, single_reference):
  """Runs trained alone give the table of the grouped runs: after the smoke preset's one epoch
  (6 steps) their numbers differ by float32 rounding only, so each accuracy of a fold is the same
  or, where rounding moves one utterance across a decision boundary, one utterance away."""
  workdir, done = single_reference
  assert len(ran_cells(done.stderr)) == 4
  assert not list(workdir.glob("*/*/group_fold_*"))
  single, grouped = results_of(workdir), results_of(reference[0])
  assert sorted(single) == sorted(grouped)
  for name, result in single.items():
    other = grouped[name]
    assert result["selected_epoch"] == other["selected_epoch"]
    for split, size in (("test", "num_test"), ("val", "num_val")):
      assert abs(result[split]["wa"] - other[split]["wa"]) <= 1 / result[size] + 1e-9
    assert abs(result["train_accuracy"] - other["train_accuracy"]) <= 1 / result["num_train"] + 1e-9
  single_table, grouped_table = table_of(workdir)["table"], table_of(reference[0])["table"]
  assert single_table.keys() == grouped_table.keys()
  for task, models in single_table.items():
    for model, entry in models.items():
      assert entry.keys() == grouped_table[task][model].keys()
      assert entry["learning_rate"] == grouped_table[task][model]["learning_rate"]
  for name, result in single.items():
    assert result["history"][0]["train_loss"] == pytest.approx(
        grouped[name]["history"][0]["train_loss"], rel=0.02)


def test_two_shards_give_the_table_of_one_process(reference, cache, tmp_path):
  workdir = tmp_path / "t1"
  workers = [start_table(workdir, cache, tmp_path / f"log{i}", f"--shard={i}/2") for i in (0, 1)]
  assert [w.wait(timeout=600) for w in workers] == [0, 0]
  logs = [(tmp_path / f"log{i}").read_text() for i in (0, 1)]
  ran = [ran_cells(log) for log in logs]
  assert [len(r) for r in ran] == [1, 1] and len(set(ran[0] + ran[1])) == 2
  assert "shard 1/2 (--shard='1/2') takes 1" in logs[1]
  collected = run_table(workdir, cache, "--collect")
  assert collected.returncode == 0, collected.stderr[-3000:]
  assert not ran_cells(collected.stderr)
  assert table_of(workdir)["table"] == table_of(reference[0])["table"]
  assert results_of(workdir) == results_of(reference[0])
  assert leftovers(workdir) == []


CELL_LEVEL = "*/*/*/*/fold_*"  # <model>/<task>/lr<lr>/seed<seed>/fold_<k>


def wait_for_second_cell(workdir, worker, timeout_s=300):
  """Returns once one cell is complete and another is locked (in progress)."""
  deadline = time.time() + timeout_s
  while time.time() < deadline and worker.poll() is None:
    # Only the cells' own level: a walk into checkpoints/ races Orbax renaming its folders.
    locks = [p for p in workdir.glob(f"{CELL_LEVEL}/running.lock")
             if not (p.parent / "result.json").exists()]
    if len(list(workdir.glob(f"{CELL_LEVEL}/result.json"))) == 1 and locks:
      return locks[0].parent
    time.sleep(0.02)
  raise AssertionError(f"worker ended ({worker.poll()}) or timed out before its second cell")


def test_killed_worker_loses_and_duplicates_nothing(single_reference, cache, tmp_path):
  reference = single_reference
  workdir = tmp_path / "t1"
  worker = start_table(workdir, cache, tmp_path / "log", "--nogroup")
  killed_cell = wait_for_second_cell(workdir, worker)
  time.sleep(0.5)  # into its training
  assert worker.poll() is None
  worker.send_signal(signal.SIGKILL)
  worker.wait()
  survived = {p: p.stat().st_mtime_ns for p in workdir.rglob("result.json")}
  assert 1 <= len(survived) < 4 and not (killed_cell / "result.json").exists()
  left_lock = (killed_cell / "running.lock").exists()

  # The partial grid is readable; a cell whose worker died shows a stale lock.
  partial = run_table(workdir, cache, "--collect")
  assert partial.returncode == 0, partial.stderr[-3000:]
  data = table_of(workdir)
  assert not data["complete"] and data["cells"] == {"total": 4, "complete": len(survived)}
  statuses = {f"{m['fold']}-{m['lr']:g}": m["status"] for m in data["missing"]}
  killed = f"{killed_cell.name[len('fold_'):]}-{killed_cell.parent.parent.name[len('lr'):]}"
  assert statuses[killed].startswith("stale lock of" if left_lock else "not started")
  if len(survived) == 1:
    assert data["table"] == {}  # no learning rate has both folds yet
  else:
    assert data["table"]["emotion"]["simplenet_cnn"]["incomplete_lrs"] == ["0.001"]
  assert (f"Incomplete grid: {4 - len(survived)} of 4 training runs are missing"
          in (workdir / "table1.md").read_text())

  rerun = run_table(workdir, cache, "--nogroup")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert len(ran_cells(rerun.stderr)) == 4 - len(survived)  # finished cells are not trained again
  assert ("taking over the lock" in rerun.stderr) == left_lock
  assert {p: p.stat().st_mtime_ns for p in survived} == survived
  assert len(list(workdir.rglob("result.json"))) == 4
  assert leftovers(workdir) == []
  assert table_of(workdir)["table"] == table_of(reference[0])["table"]
  assert results_of(workdir) == results_of(reference[0])


UNIT_LEVEL = "*/*/group_fold_*"  # <model>/<task>/group_fold_<k>


def wait_for_second_group(workdir, worker, timeout_s=300):
  """Returns the folder of the second unit once the first is complete and the second is training
  (its group's folder written)."""
  deadline = time.time() + timeout_s
  while time.time() < deadline and worker.poll() is None:
    started = [p.parent for p in workdir.glob(f"{UNIT_LEVEL}/running.lock")
               if list(p.parent.glob("group_*/group.json"))
               and not list(workdir.glob(f"*/*/*/*/{p.parent.name[len('group_'):]}/result.json"))]
    if len(list(workdir.glob(f"{CELL_LEVEL}/result.json"))) == 2 and started:
      return started[0]
    time.sleep(0.02)
  raise AssertionError(f"worker ended ({worker.poll()}) or timed out before its second group")


def test_sigterm_stops_a_grouped_worker_and_the_rerun_resumes(reference, cache, tmp_path):
  """SIGTERM while the second group trains: exit 143 with one line naming the position; the
  group's checkpoint (when it had taken a step) is resumed, and the table equals an unbroken
  run's."""
  workdir = tmp_path / "t1"
  log = tmp_path / "log"
  worker = start_table(workdir, cache, log)
  unit = wait_for_second_group(workdir, worker)
  time.sleep(0.3)
  worker.send_signal(signal.SIGTERM)
  assert worker.wait(timeout=300) == 143, log.read_text()[-3000:]
  last = log.read_text().strip().splitlines()[-1]
  match = re.fullmatch(r"table1: preempted by SIGTERM at fold (\d) epoch 1 step (\d)/6 \(a group "
                       r"of 2 runs\); rerun the same command to resume \(from epoch 1 step \2\)",
                       last)
  assert match and unit.name == f"group_fold_{match[1]}", last
  saved = list(unit.glob("group_*/checkpoints/latest/*"))
  assert [p.name for p in saved] == ([match[2]] if int(match[2]) else [])
  assert not (unit / "running.lock").exists()
  collected = run_table(workdir, cache, "--collect")
  assert collected.returncode == 0, collected.stderr[-3000:]
  assert [m["status"] for m in table_of(workdir)["missing"]] == [
      "interrupted (a checkpoint, no live lock)"] * 2
  rerun = run_table(workdir, cache)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert ran_cells(rerun.stderr) == [f"model=simplenet_cnn task=emotion fold={match[1]}"]
  assert ("resumed in epoch 1" in rerun.stderr) == bool(int(match[2]))
  assert table_of(workdir)["table"] == table_of(reference[0])["table"]
  assert results_of(workdir) == results_of(reference[0])
  assert leftovers(workdir) == []


def test_partial_learning_rates_are_left_out_of_the_choice():
  from wavejax.reporting import paper_table, results  # pylint: disable=g-import-not-at-top

  def fold(val_wa, test_wa):
    return results.FoldResult(
        model="m", task="emotion", dataset="d", fold=1, test_session=1, classes=[], num_train=1,
        num_val=1, num_test=1, selected_epoch=1, val={"wa": val_wa}, test={"wa": test_wa, "ua": 0},
        train_accuracy=1.0, best_test_epoch=1, best_test_wa=test_wa, best_test_ua=0,
        train_utterances_per_s=1.0)

  runs = {("m", "emotion", 1e-3, 0): [fold(0.5, 0.4)], ("m", "emotion", 1e-4, 0): [fold(0.9, 0.8)]}
  table = paper_table.summarize_grid(runs, incomplete={("m", "emotion", 1e-4)})
  entry = table["emotion"]["m"]
  assert entry["learning_rate"] == 1e-3 and entry["val_wa_by_lr"] == {"0.001": 0.5}
  assert entry["incomplete_lrs"] == ["0.0001"] and entry["test_wa"]["mean"] == 0.4
  assert "0.001 (1 of 2 rates)" in paper_table.markdown(table, "d")
  assert paper_table.summarize_grid(runs, incomplete={("m", "emotion", 1e-3),
                                                 ("m", "emotion", 1e-4)}) == {}
  assert paper_table.summarize_grid(runs)["emotion"]["m"]["learning_rate"] == 1e-4


def test_collect_on_a_missing_workdir_is_one_line_and_creates_nothing(cache, tmp_path):
  workdir = tmp_path / "typo"
  done = run_table(workdir, cache, "--collect")
  assert done.returncode == 1
  lines = done.stderr.strip().splitlines()
  assert lines[-1] == (f"table1: error: --workdir={workdir}: no such folder, so nothing to "
                       "collect; pass the --workdir the workers trained into")
  assert "Traceback" not in done.stderr and not workdir.exists()


def test_collect_names_a_damaged_result(reference, cache, tmp_path):
  workdir = tmp_path / "t1"
  shutil.copytree(reference[0], workdir)
  damaged = sorted(workdir.glob(f"{CELL_LEVEL}/result.json"))[0]
  damaged.write_text(damaged.read_text()[:50])
  done = run_table(workdir, cache, "--collect")
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1].startswith(
      f"table1: error: {damaged}: damaged (") and "delete it and rerun" in done.stderr


def always_wrong(path):
  """Rewrites a predictions.csv so that every prediction is a wrong class, with its probability."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  classes = [name[2:] for name in rows[0] if name.startswith("p_")]
  for row in rows:
    wrong = classes[(classes.index(row["label"]) + 1) % len(classes)]
    row["predicted"] = wrong
    for name in classes:
      row[f"p_{name}"] = "1" if name == wrong else "0"
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def test_collect_rules_on_the_claims_and_names_runs_without_predictions(reference, cache,
                                                                         tmp_path):
  """A second model made of the first one's runs, always wrong: SimpleNet-CNN beats it (insight
  2) by exactly its own test WA; without one fold's predictions the claim is not ruled and the
  run is named."""
  workdir = tmp_path / "t1"
  shutil.copytree(reference[0], workdir)
  shutil.copytree(workdir / "simplenet_cnn", workdir / "specnet")
  for path in (workdir / "specnet").rglob("predictions.csv"):
    always_wrong(path)
  done = run_table(workdir, cache, "--collect", "--models=simplenet_cnn,specnet")
  assert done.returncode == 0, done.stderr[-3000:]
  assert not ran_cells(done.stderr)
  table = table_of(workdir)
  ruled = {c["key"]: c for c in table["claims"]}
  insight = ruled["insight_2"]
  pair = insight["pairs"][0]
  cnn_wa = table["table"]["emotion"]["simplenet_cnn"]["test_wa"]["mean"]
  assert pair["difference"]["difference"] == pytest.approx(cnn_wa, abs=1e-12)
  assert pair["difference"]["value_b"] == 0.0
  assert pair["mcnemar"]["b_only"] == 0 and pair["mcnemar"]["a_only"] == round(16 * cnn_wa)
  assert insight["verdict"] == pair["difference"]["verdict"] == "supported"
  assert ruled["best_on_emotion"]["verdict"] == "not ruled"
  assert "SoundNet" in ruled["best_on_emotion"]["reason"]
  assert table["lacking_predictions"] == []
  markdown = (workdir / "table1.md").read_text()
  assert "| Sec. 4.2, insight 2: SimpleNet-CNN beats SpecNet" in markdown
  assert "supported |" in markdown and "Interval half-widths" in markdown
  if plots.available():
    assert (workdir / "table1_claims.png").stat().st_size > 1000
  lr = f"{table['table']['emotion']['simplenet_cnn']['learning_rate']:g}"
  (workdir / f"simplenet_cnn/emotion/lr{lr}/seed0/fold_2/predictions.csv").unlink()
  again = run_table(workdir, cache, "--collect", "--models=simplenet_cnn,specnet")
  assert again.returncode == 0, again.stderr[-3000:]
  table = table_of(workdir)
  assert table["lacking_predictions"] == [
      {"model": "simplenet_cnn", "task": "emotion", "lr": float(lr), "seed": 0,
       "why": "no predictions.csv in fold 2 (trained by an older wavejax)"}]
  assert {c["key"]: c for c in table["claims"]}["insight_2"]["verdict"] == "not ruled"
  assert f"- simplenet_cnn emotion lr={lr} seed 0: no predictions.csv in fold 2" in (
      workdir / "table1.md").read_text()


def test_the_decisive_preset_trains_three_seeds_at_iemocaps_size(cache, tmp_path):
  """--preset=decisive plans 3 seeds per cell (--seeds overrides it) at 550 task utterances per
  speaker and 6 s clips; collecting an empty workdir plans without generating the corpus."""
  from wavejax.config import presets  # pylint: disable=g-import-not-at-top
  fields = presets.fields("decisive", presets.TABLE1)
  assert fields["data.builtin.utterances_per_speaker"] * 2 == 1100  # per session: two speakers
  assert fields["data.builtin.clip_seconds"] == 6.0
  workdir = tmp_path / "decisive"
  workdir.mkdir()
  plan = ["--preset=decisive", "--collect", "--models=specnet", "--tasks=emotion", "--lrs=1e-3",
          "--folds=1"]
  for extra, seeds in (((), [0, 1, 2]), (("--seeds=4",), [4])):
    done = subprocess.run([sys.executable, "-m", "experiments.table1", f"--workdir={workdir}",
                           *plan, *extra], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=table_env(cache))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [cell["seed"] for cell in table_of(workdir)["missing"]] == seeds
  assert not list(cache.glob("*-n550"))
