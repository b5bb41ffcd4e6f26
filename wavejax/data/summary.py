"""A dataset summary without training: counts, folds, audio statistics and every problem found.

`summarize(manifest, task)` inspects every file (in parallel, with a progress log) and returns a
JSON-friendly dict; `format_summary` renders it as text. `python -m wavejax.data summary` is the
command-line front end (`wavejax/data/__main__.py`).

Problems reported, one line each: files the loader did not use (`Manifest.notes`), missing files,
unreadable files (not audio, a truncated header, empty, NaN/Inf samples, directories), truncated
files (data cut short of the frames the header declares), silent files,
duplicates (the same file, utterance id or audio content listed twice), utterances whose label is
outside the task, unknown genders for the gender task, and speakers split across folds.
"""

from __future__ import annotations

import collections
import statistics

from wavejax import errors
from wavejax.data import audio, folds, workers
from wavejax.data.manifest import UNKNOWN, Manifest


def summarize(manifest: Manifest, task: str = "emotion", *, clip_seconds: float | None = None,
              num_workers: int | None = None, problems=(), fold_assignment=None) -> dict:
  """Describes `manifest` for `task` as a JSON-friendly dict.

  Args:
    manifest: every utterance the loader found (before selecting the task's utterances).
    task: the task whose classes and folds are counted (`folds.TASKS`).
    clip_seconds: when set, also count the files that are cut or padded to this length.
    num_workers: file-inspection workers (None: every core).
    problems: further `(kind, message)` pairs found by the caller (e.g. missing files).
    fold_assignment: a folds.json whose groups replace the loader's (`folds.apply_assignment`).
  """
  found = [{"kind": kind, "message": message} for kind, message in problems]
  found += [{"kind": "missing" if "does not exist" in note else "not used", "message": note}
            for note in manifest.notes]
  reports = inspect_files(manifest, num_workers)
  found += _file_problems(manifest, reports)
  selected, outside = _select(manifest, task, found)
  if fold_assignment and len(selected):
    selected = folds.apply_assignment(selected, fold_assignment)
  found += outside
  classes = folds.task_classes(task, manifest)
  return {
      "dataset": manifest.dataset, "root": manifest.root, "task": task,
      "classes": list(classes), "utterances": len(manifest), "in_task": len(selected),
      "per_class": _counts(selected, folds.task_field(task), classes),
      "per_label": _counts(manifest, "label", manifest.label_classes),
      "per_gender": dict(sorted(collections.Counter(manifest.field("gender")).items())),
      "per_speaker": _speakers(manifest, selected),
      "per_session": {str(s): n for s, n in sorted(collections.Counter(
          selected.field("session")).items())},
      "folds": _folds(selected, task, classes, found),
      "audio": _audio_stats(reports, clip_seconds),
      "problems": found,
      "problem_counts": dict(collections.Counter(p["kind"] for p in found)),
  }


def inspect_files(manifest: Manifest, num_workers: int | None = None) -> list[audio.FileReport]:
  """`audio.inspect` of every utterance's file, in manifest order."""
  reports = [None] * len(manifest)

  def store(results):
    for index, report in results:
      reports[index] = report

  workers.run_chunks(_inspect_chunk, [(i, u.path) for i, u in enumerate(manifest)], (),
                     what=f"Inspecting {manifest.dataset}", num_workers=num_workers, store=store)
  return reports


def _inspect_chunk(items) -> list:
  return [(index, audio.inspect(path)) for index, path in items]


def _file_problems(manifest: Manifest, reports) -> list[dict]:
  found = []
  for report in reports:
    if report.error:
      kind = ("missing" if "does not exist" in report.error else
              "truncated" if audio.CUT in report.error else "unreadable")
      found.append({"kind": kind, "message": report.error})
    elif report.silent:
      found.append({"kind": "silent", "message": f"{report.path}: silent (peak {report.peak:.2g} "
                                                 f"<= {audio.SILENCE_PEAK:g}); it trains as zeros"})
  found += _duplicates(manifest, reports)
  return found


def _duplicates(manifest: Manifest, reports) -> list[dict]:
  found = []
  for field in ("path", "utt_id"):
    for value, count in collections.Counter(manifest.field(field)).items():
      if count > 1:
        found.append({"kind": "duplicate", "message": f"{value}: {field} listed {count} times"})
  by_hash = collections.defaultdict(list)
  for utt, report in zip(manifest, reports):
    if report.sha1:
      by_hash[report.sha1].append(utt)
  for same in by_hash.values():
    first = min(same, key=lambda u: u.path)
    for utt in sorted(same, key=lambda u: u.path):
      if utt.path != first.path:
        conflict = (f" but is labelled {utt.label!r}, not {first.label!r}"
                    if utt.label != first.label else "")
        found.append({"kind": "duplicate", "message": f"{utt.path}: same audio content as "
                                                      f"{first.path}{conflict}"})
  return found


def _select(manifest: Manifest, task: str, found: list[dict]):
  """The task's utterances, and a problem line per label value left outside the task."""
  try:
    selected = folds.select(manifest, task)
  except errors.DatasetError as e:
    found.append({"kind": "outside task", "message": str(e)})
    selected = manifest.replace(())
  field, outside = folds.task_field(task), []
  kept = {id(u) for u in selected}
  dropped = collections.Counter(u.label for u in manifest if id(u) not in kept)
  for label, count in sorted(dropped.items()):
    outside.append({"kind": "outside task", "message": (
        f"{count} utterance(s) labelled {label!r} have no {field} of task {task!r} "
        f"{folds.task_classes(task, manifest)}; not used for this task")})
  if task == "gender" and UNKNOWN in selected.field("gender"):
    count = selected.field("gender").count(UNKNOWN)
    outside.append({"kind": "unknown gender", "message": (
        f"{count} utterance(s) have no gender; the gender task needs a gender for every file")})
  return selected, outside


def _counts(manifest: Manifest, field: str, classes) -> dict[str, int]:
  counts = collections.Counter(manifest.field(field))
  ordered = {name: counts.pop(name, 0) for name in classes}
  ordered.update(sorted(counts.items()))
  return ordered


def _speakers(manifest: Manifest, selected: Manifest) -> dict[str, dict]:
  in_task = collections.Counter(selected.field("speaker"))
  speakers = {}
  for utt in manifest:
    entry = speakers.setdefault(utt.speaker or "?", {"gender": utt.gender or "?",
                                                     "sessions": set(), "utterances": 0,
                                                     "in_task": in_task.get(utt.speaker, 0)})
    entry["utterances"] += 1
    entry["sessions"].add(utt.session)
  for entry in speakers.values():
    entry["sessions"] = sorted(entry["sessions"])
  return dict(sorted(speakers.items()))


def _folds(selected: Manifest, task: str, classes, found: list[dict]) -> list[dict]:
  field, table = folds.task_field(task), []
  for number, session in enumerate(selected.sessions, start=1):
    members = [u for u in selected if u.session == session]
    counts = collections.Counter(getattr(u, field) for u in members)
    table.append({"fold": number, "test_session": session, "utterances": len(members),
                  "speakers": sorted({u.speaker or "?" for u in members}),
                  "per_class": {name: counts.get(name, 0) for name in classes}})
  sessions_of = collections.defaultdict(set)
  for utt in selected:
    if utt.speaker != UNKNOWN:
      sessions_of[utt.speaker].add(utt.session)
  for speaker, sessions in sorted(sessions_of.items()):
    if len(sessions) > 1:
      found.append({"kind": "speaker in several folds", "message": (
          f"speaker {speaker} appears in sessions {sorted(sessions)}; its folds are not "
          "speaker-independent")})
  return table


def _audio_stats(reports, clip_seconds) -> dict:
  good = [r for r in reports if not r.error]
  durations = [r.duration_s for r in good]
  stats = {
      "readable_files": len(good),
      "sample_rates": _histogram(r.sample_rate for r in good),
      "channels": _histogram(r.channels for r in good),
      "formats": _histogram(r.format for r in good),
      "duration_s": ({"min": min(durations), "median": statistics.median(durations),
                      "mean": statistics.fmean(durations), "max": max(durations),
                      "total_hours": sum(durations) / 3600} if durations else {}),
  }
  if clip_seconds is not None and durations:
    stats["clip_seconds"] = clip_seconds
    stats["longer_than_clip"] = sum(d > clip_seconds for d in durations)
    stats["shorter_than_clip"] = sum(d < clip_seconds for d in durations)
  return stats


def _histogram(values) -> dict[str, int]:
  counts = collections.Counter(values)
  return {str(k): counts[k] for k in sorted(counts)}


def format_summary(summary: dict) -> str:
  """The summary as plain text for a terminal."""
  lines = [f"dataset {summary['dataset']}  root {summary['root']}",
           f"task {summary['task']}: {summary['in_task']} of {summary['utterances']} utterances, "
           f"classes {', '.join(summary['classes'])}", ""]
  lines += _table("per class (task)", summary["per_class"])
  lines += _table("per label (all utterances)", summary["per_label"])
  lines += _table("per gender (all utterances; ? = unknown)",
                  {k or "?": v for k, v in summary["per_gender"].items()})
  lines += _table("per session (task)", summary["per_session"])
  lines.append(f"per speaker ({len(summary['per_speaker'])}): speaker gender sessions "
               "utterances in-task")
  lines += [f"  {name:<12} {e['gender']:<2} {','.join(map(str, e['sessions'])):<8} "
            f"{e['utterances']:>6} {e['in_task']:>6}" for name, e in summary["per_speaker"].items()]
  lines += ["", "folds (test session: utterances, speakers, per class)"]
  for fold in summary["folds"]:
    per_class = " ".join(f"{k}={v}" for k, v in fold["per_class"].items())
    lines.append(f"  fold {fold['fold']} session {fold['test_session']}: {fold['utterances']} utt, "
                 f"{len(fold['speakers'])} speakers ({','.join(fold['speakers'][:12])}"
                 f"{',...' if len(fold['speakers']) > 12 else ''}); {per_class}")
  lines += ["", *_audio_lines(summary["audio"]), ""]
  problems = summary["problems"]
  counts = ", ".join(f"{k} {v}" for k, v in summary["problem_counts"].items())
  lines.append(f"problems: {len(problems)}" + (f" ({counts})" if problems else ""))
  lines += [f"  [{p['kind']}] {p['message']}" for p in problems]
  return "\n".join(lines)


def _table(title: str, counts: dict) -> list[str]:
  total = sum(counts.values())
  return ([f"{title}: {total}"] +
          [f"  {name:<16} {count:>7}" for name, count in counts.items()] + [""])


def _audio_lines(stats: dict) -> list[str]:
  lines = [f"audio: {stats['readable_files']} readable files",
           "  sample rates: " + _pairs(stats["sample_rates"], " Hz"),
           "  channels: " + _pairs(stats["channels"], ""),
           "  formats: " + _pairs(stats["formats"], "")]
  d = stats["duration_s"]
  if d:
    lines.append(f"  duration s: min {d['min']:.3f} median {d['median']:.3f} mean {d['mean']:.3f} "
                 f"max {d['max']:.3f}; total {d['total_hours']:.2f} h")
  if "clip_seconds" in stats:
    lines.append(f"  clip {stats['clip_seconds']:g} s: {stats['longer_than_clip']} files cut, "
                 f"{stats['shorter_than_clip']} padded")
  return lines


def _pairs(histogram: dict, unit: str) -> str:
  return ", ".join(f"{k}{unit}: {v}" for k, v in histogram.items()) or "-"
