"""The built-in corpus: synthetic emotional speech in the exact `IEMOCAP_full_release` layout.

Users without IEMOCAP get this corpus instead. `generate` writes five sessions with one female and
one male speaker each, in the real corpus' folder layout, file names and label-file format, so that
the IEMOCAP loader (`wavejax/data/iemocap.py`) reads it unchanged::

  root/README.txt
  root/Session{s}/dialog/EmoEvaluation/{dialog}.txt       summary lines + evaluator lines
  root/Session{s}/dialog/EmoEvaluation/{Attribute,Categorical,Self-evaluation}/   (empty)
  root/Session{s}/dialog/transcriptions/{dialog}.txt
  root/Session{s}/sentences/wav/{dialog}/{utt_id}.wav       16-bit PCM, mono

As in the real corpus, both speakers talk in every dialog: the speaker's gender is the first
letter of the utterance id's last token (`Ses01F_impro01_M013` is spoken by the male speaker
`01M`), not the letter after `SesNN`. Dialog names include the irregular real ones
(`Ses03M_impro05a`, `Ses05M_script01_1b`). Out-of-task codes (`fru`, `xxx`, `sur`) have wavs and
label lines, and transcriptions hold unlabelled `..._FXX0`-style turns without wavs.

Audio is a source-filter model: a Rosenberg glottal pulse train with jitter and shimmer, a pitch
contour with declination and accents, a cascade of five time-varying formant resonators, aspiration
noise, band-passed noise for fricatives and stop bursts, syllable rhythm and pauses. Speakers differ
in pitch, vocal-tract length and habits; sessions in microphone/room response and background noise.
The four task emotions are overlapping distributions of pitch level and range, tempo, loudness,
spectral tilt, voice tension and breathiness, as in real emotional speech.

Everything is a deterministic function of the seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np
import soundfile as sf
from absl import logging
from scipy import signal

from wavejax import errors
from wavejax.data.cache import default_cache_dir

# Bump whenever the generated content changes: it is part of the cache folder name.
GENERATOR_VERSION = 1
SAMPLE_RATE = 16000
SESSIONS = (1, 2, 3, 4, 5)
GENDERS = ("F", "M")
TASK_CODES = ("neu", "hap", "exc", "sad", "ang")
EXTRA_CODES = ("fru", "xxx", "sur")
MIN_DURATION_S = 1.5
MAX_DURATION_S = 4.5

# Dialog names of the real corpus; the first ones of each session are used first, so small corpora
# still contain the irregular names (`impro05a`, `impro08a`, `script01_1b`).
DIALOGS = {
    1: ("Ses01F_impro01", "Ses01M_script02_1", "Ses01F_script01_1", "Ses01M_impro04",
        "Ses01F_impro03", "Ses01M_script01_2", "Ses01F_script02_2", "Ses01M_impro06"),
    2: ("Ses02M_impro02", "Ses02F_script01_3", "Ses02F_impro05", "Ses02M_script02_1",
        "Ses02F_impro07", "Ses02M_script03_2", "Ses02F_script02_2", "Ses02M_impro01"),
    3: ("Ses03M_impro05a", "Ses03F_script02_1", "Ses03M_impro08a", "Ses03F_impro02",
        "Ses03M_impro05b", "Ses03F_script01_2", "Ses03M_impro08b", "Ses03M_script03_1"),
    4: ("Ses04F_impro03", "Ses04M_script01_1", "Ses04M_impro06", "Ses04F_script03_2",
        "Ses04F_impro08", "Ses04M_script02_2", "Ses04F_impro01", "Ses04M_impro04"),
    5: ("Ses05M_script01_1b", "Ses05F_impro02", "Ses05M_impro04", "Ses05F_script02_1",
        "Ses05M_impro07", "Ses05F_script03_2", "Ses05M_script01_1", "Ses05F_impro06"),
}

_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
_CATEGORY = {"neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness",
             "ang": "Anger", "fru": "Frustration", "sur": "Surprise"}
_OTHER_CATEGORIES = ("Neutral", "Frustration", "Excited", "Other", "Fear", "Disgust", "Surprise")
# Mean (valence, activation, dominance) of the evaluators' 1-5 ratings.
_VAD = {"neu": (3.0, 2.6, 2.8), "hap": (4.0, 3.0, 3.0), "exc": (3.9, 3.6, 3.4),
        "sad": (2.0, 2.1, 2.3), "ang": (1.8, 3.8, 3.9), "fru": (2.0, 3.2, 3.3),
        "sur": (3.3, 3.6, 2.8), "xxx": (2.7, 3.0, 3.0)}
_WORDS = ("i", "you", "know", "what", "that", "yeah", "well", "just", "really", "think", "go",
          "here", "okay", "no", "right", "mean", "now", "there", "want", "never", "so", "look")

# Prosodic dimensions of one utterance: pitch offset (semitones), accent size (semitones), tempo
# (syllables/s), peak level (dBFS), spectral tilt (>0 brighter), open quotient (<0.5 tense),
# aspiration level (dB re voice) and formant shift (relative).
_DIMS = ("pitch_st", "range_st", "tempo", "peak_db", "tilt", "oq", "breath_db", "formant")
_EMOTION_MEANS = {
    "neu": (0.0, 3.0, 4.6, -8.0, 0.00, 0.60, -26.0, 0.00),
    "hap": (3.0, 5.5, 5.0, -5.5, 0.10, 0.56, -26.0, 0.04),
    "exc": (4.0, 6.5, 5.4, -4.0, 0.18, 0.52, -27.0, 0.04),
    "sad": (-1.5, 1.5, 3.6, -12.0, -0.30, 0.70, -17.0, -0.02),
    "ang": (2.5, 5.0, 5.6, -2.5, 0.40, 0.42, -32.0, 0.03),
}
_UTTERANCE_SD = np.array((1.6, 1.0, 0.5, 2.5, 0.18, 0.05, 3.0, 0.02))
_SPEAKER_SD = np.array((1.0, 0.6, 0.3, 1.5, 0.10, 0.03, 2.0, 0.01))
# Scales every emotion's distance from neutral; tunes how separable the classes are.
_EMOTION_SEPARATION = 1.2

# Male vowel formants F1-F3 (Hz, Peterson & Barney); F4, F5 are fixed. Scaled per speaker.
_VOWELS = np.array(((270, 2290, 3010), (390, 1990, 2550), (530, 1840, 2480), (660, 1720, 2410),
                    (730, 1090, 2440), (570, 840, 2410), (440, 1020, 2240), (300, 870, 2240),
                    (640, 1190, 2390), (490, 1350, 1690)), dtype=float)
_F45 = (3300.0, 4200.0)
_NASAL_FORMANTS = (250.0, 1100.0, 2300.0, 3300.0, 4200.0)
_BANDWIDTHS = np.array((70.0, 90.0, 130.0, 180.0, 250.0))
_SIL, _VOWEL, _NASAL, _FRIC, _STOP = range(5)
_BLOCK_S = 0.01  # Formant filters are updated every 10 ms.


@dataclasses.dataclass(frozen=True)
class _Speaker:
  """Fixed traits of one speaker."""
  session: int
  gender: str
  f0_hz: float
  vtl: float  # Formant scale; > 1 means a shorter vocal tract.
  expressivity: float
  offset: np.ndarray  # Added to the prosodic dimensions of every utterance.
  jitter: float
  shimmer: float
  bw_scale: float


@dataclasses.dataclass(frozen=True)
class _Channel:
  """Microphone, room and background noise of one session."""
  fir: np.ndarray
  highpass: np.ndarray  # Second-order sections.
  noise_db: float
  noise_pole: float
  hum_db: float
  hum_hz: float


@dataclasses.dataclass(frozen=True)
class _Turn:
  """One turn of a dialog. Turns with an empty `code` appear in the transcription only."""
  utt_id: str
  gender: str
  code: str
  start: float
  end: float
  text: str
  rating_lines: tuple[str, ...] = ()
  vad: tuple[float, float, float] = (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------
# Public API.


def generate(root, *, seed: int = 0, utterances_per_speaker: int = 40,
             sample_rate: int = SAMPLE_RATE) -> pathlib.Path:
  """Writes the synthetic corpus under `root` (which must not exist or be empty); returns it.

  Args:
    root: the folder to create, playing the role of `IEMOCAP_full_release`.
    seed: non-negative seed; the same seed gives byte-identical files.
    utterances_per_speaker: task-class (neu/hap/exc/sad/ang) utterances per speaker; each speaker
      also gets about 25 % extra out-of-task utterances (fru/xxx/sur).
    sample_rate: sampling rate of the wav files in Hz.

  Returns:
    `root` as a `pathlib.Path`. `README.txt` is written last, so its presence marks a complete tree.
  """
  _check_args(seed, utterances_per_speaker, sample_rate)
  root = pathlib.Path(root)
  if root.exists() and any(root.iterdir()):
    raise FileExistsError(f"{root} is not empty; generate the synthetic corpus into a new folder")
  rng = np.random.default_rng(seed)
  channels = {s: _draw_channel(rng, sample_rate) for s in SESSIONS}
  speakers = {(s, g): _draw_speaker(rng, s, g) for s in SESSIONS for g in GENDERS}
  for s in SESSIONS:
    _make_session_dirs(root, s)
    plan = _plan_session(rng, s, utterances_per_speaker)
    for d, (dialog, turns) in enumerate(plan.items()):
      utt_seed = (seed, s, d)
      _write_dialog(root, s, dialog, turns, speakers, channels[s], utt_seed, sample_rate,
                    start_s=float(rng.uniform(1.5, 8.0)), gaps=rng.uniform(0.15, 1.6, len(turns)))
  (root / "README.txt").write_text(_readme(seed, utterances_per_speaker, sample_rate))
  return root


def corpus_name(seed: int = 0, utterances_per_speaker: int = 40) -> str:
  """Name of the cache sub-folder holding one generated corpus."""
  return f"synthetic_iemocap-v{GENERATOR_VERSION}-seed{seed}-n{utterances_per_speaker}"


def ensure_corpus(cache_dir=None, *, seed: int = 0,
                  utterances_per_speaker: int = 40) -> pathlib.Path:
  """Returns the cached corpus for (seed, size), generating it first if needed.

  The corpus is generated into a temporary sibling folder and renamed into place, so an interrupted
  run never leaves a folder that is used later, and of two racing processes the loser discards its
  copy and returns the winner's.

  Args:
    cache_dir: folder holding generated corpora; `cache.default_cache_dir()` when None.
    seed: generator seed.
    utterances_per_speaker: task utterances per speaker.

  Returns:
    The corpus root, `cache_dir / corpus_name(seed, utterances_per_speaker)`.
  """
  _check_args(seed, utterances_per_speaker, SAMPLE_RATE)
  cache_dir = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
  final = cache_dir / corpus_name(seed, utterances_per_speaker)
  if _is_complete(final):
    return final
  cache_dir.mkdir(parents=True, exist_ok=True)
  _remove_stale_temps(cache_dir, final.name)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache_dir))
  try:
    logging.info("Generating the synthetic corpus in %s", final)
    started = time.monotonic()
    generate(tmp, seed=seed, utterances_per_speaker=utterances_per_speaker)
    os.chmod(tmp, 0o755)  # mkdtemp made it private.
    os.rename(tmp, final)  # Atomic; fails if another process already put its copy there.
    logging.info("Generated the synthetic corpus in %.1f s", time.monotonic() - started)
  except OSError:
    if not _is_complete(final):
      raise
    logging.info("Another process generated %s first; using its copy", final)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return final


# ----------------------------------------------------------------------------------------------
# Cache helpers.


def _check_args(seed, utterances_per_speaker, sample_rate):
  """Raises ConfigError on arguments the generator cannot honour."""
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise errors.ConfigError(f"synthetic corpus seed={seed!r} must be a non-negative integer")
  if not isinstance(utterances_per_speaker, (int, np.integer)) or utterances_per_speaker < 1:
    raise errors.ConfigError(
        f"utterances_per_speaker={utterances_per_speaker!r} must be a positive integer")
  if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 12000:
    raise errors.ConfigError(f"sample_rate={sample_rate!r} must be an integer >= 12000 Hz")


def _is_complete(root: pathlib.Path) -> bool:
  return (root / "README.txt").is_file()


def _remove_stale_temps(cache_dir: pathlib.Path, name: str, max_age_s: float = 6 * 3600):
  """Deletes temporary folders of interrupted runs; young ones may belong to a live process."""
  now = time.time()
  for path in cache_dir.glob(f".{name}.tmp-*"):
    try:
      if now - path.stat().st_mtime > max_age_s:
        shutil.rmtree(path, ignore_errors=True)
    except OSError:
      pass


# ----------------------------------------------------------------------------------------------
# Corpus plan: speakers, channels, who says what in which dialog.


def _draw_speaker(rng, session: int, gender: str) -> _Speaker:
  """Draws the fixed traits of one speaker."""
  female = gender == "F"
  return _Speaker(
      session=session, gender=gender,
      f0_hz=float(rng.uniform(180.0, 240.0) if female else rng.uniform(95.0, 140.0)),
      vtl=float(rng.uniform(1.12, 1.22) if female else rng.uniform(0.95, 1.05)),
      expressivity=float(rng.uniform(0.8, 1.15)),
      offset=rng.normal(0.0, 1.0, len(_DIMS)) * _SPEAKER_SD,
      jitter=float(rng.uniform(0.004, 0.012)),
      shimmer=float(rng.uniform(0.04, 0.10)),
      bw_scale=float(rng.uniform(0.85, 1.2)))


def _draw_channel(rng, fs: int) -> _Channel:
  """Draws a session's microphone/room impulse response and background noise."""
  n = int(0.012 * fs)
  fir = np.zeros(n)
  fir[0] = 1.0
  taps = rng.integers(int(0.001 * fs), n, 6)
  fir[taps] += rng.uniform(-0.35, 0.35, 6) * np.exp(-taps / (0.004 * fs))
  fir = np.convolve(fir, (1.0, float(rng.uniform(-0.5, 0.4))))  # Gentle tilt.
  highpass = signal.butter(2, float(rng.uniform(50.0, 120.0)), "highpass", fs=fs, output="sos")
  return _Channel(fir=fir / np.abs(fir).sum() * 1.5, highpass=highpass,
                  noise_db=float(rng.uniform(-54.0, -42.0)),
                  noise_pole=float(rng.uniform(0.0, 0.95)),
                  hum_db=float(rng.uniform(-75.0, -55.0)), hum_hz=float(rng.choice((50.0, 60.0))))


def _speaker_codes(rng, n_task: int) -> list[str]:
  """Balanced task codes (happy split into hap/exc) plus ~25 % out-of-task codes, shuffled."""
  classes = rng.permutation(4)[np.arange(n_task) % 4]
  happy = rng.permutation(np.arange((classes == 1).sum()) % 2)
  codes, k = [], 0
  for c in classes:
    if c == 1:
      codes.append(("hap", "exc")[happy[k]])
      k += 1
    else:
      codes.append(("neu", None, "sad", "ang")[c])
  n_extra = max(1, round(0.25 * n_task))
  codes += [str(c) for c in rng.choice(EXTRA_CODES, n_extra, p=(0.45, 0.45, 0.10))]
  return [codes[i] for i in rng.permutation(len(codes))]


def _plan_session(rng, session: int, n_task: int) -> dict[str, list[tuple[str, str]]]:
  """Maps each dialog of a session to its turns [(gender, code)] in time order; code '' = XX."""
  codes = {g: _speaker_codes(rng, n_task) for g in GENDERS}
  n_dialogs = min(len(DIALOGS[session]), max(2, round(n_task / 8) + 2), len(codes["F"]))
  plan = {}
  for d, dialog in enumerate(DIALOGS[session][:n_dialogs]):
    mine = {g: codes[g][d::n_dialogs] for g in GENDERS}  # Both speakers talk in every dialog.
    order = rng.permutation(["F"] * len(mine["F"]) + ["M"] * len(mine["M"]))
    turns, used = [], {"F": 0, "M": 0}
    for g in order:
      turns.append((str(g), mine[g][used[g]]))
      used[g] += 1
    for _ in range(int(rng.integers(1, 3))):  # Transcription-only turns (`..._FXX0`).
      turns.insert(int(rng.integers(0, len(turns) + 1)), (str(rng.choice(GENDERS)), ""))
    plan[dialog] = turns
  return plan


# ----------------------------------------------------------------------------------------------
# Writing one dialog: wavs, label file, transcription.


def _make_session_dirs(root: pathlib.Path, session: int):
  evaluation = root / f"Session{session}" / "dialog" / "EmoEvaluation"
  for sub in ("Attribute", "Categorical", "Self-evaluation"):
    (evaluation / sub).mkdir(parents=True, exist_ok=True)
  (root / f"Session{session}" / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
  (root / f"Session{session}" / "sentences" / "wav").mkdir(parents=True, exist_ok=True)


def _write_dialog(root, session, dialog, plan, speakers, channel, utt_seed, fs, start_s, gaps):
  """Synthesises and writes every turn of a dialog, then its label and transcription files."""
  wav_dir = root / f"Session{session}" / "sentences" / "wav" / dialog
  wav_dir.mkdir(parents=True, exist_ok=True)
  counters = {(g, x): 0 for g in GENDERS for x in (False, True)}
  turns, t = [], start_s
  for i, (gender, code) in enumerate(plan):
    rng = np.random.default_rng([*utt_seed, i])
    number = counters[gender, not code]
    counters[gender, not code] += 1
    text = " ".join(rng.choice(_WORDS, int(rng.integers(2, 9))))
    if not code:
      turn = _Turn(f"{dialog}_{gender}XX{number}", gender, "", t, t + rng.uniform(0.4, 1.5),
                   "[LAUGHTER]" if rng.random() < 0.5 else text)
    else:
      utt_id = f"{dialog}_{gender}{number:03d}"
      audio = _synthesize(rng, code, speakers[session, gender], channel, fs)
      sf.write(wav_dir / f"{utt_id}.wav", audio, fs, subtype="PCM_16")
      vad, lines = _ratings(rng, code, gender)
      turn = _Turn(utt_id, gender, code, t, t + len(audio) / fs, text.capitalize() + ".",
                   lines, vad)
    turns.append(turn)
    t = turn.end + gaps[i]
  _write_labels(root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt", turns)
  _write_transcription(
      root / f"Session{session}" / "dialog" / "transcriptions" / f"{dialog}.txt", turns)


def _ratings(rng, code: str, gender: str):
  """Evaluator lines (`C-E2:`, `A-E3:`, self `C-F1:`) and the summary V/A/D (their mean)."""
  evaluators = sorted(rng.choice(6, 3, replace=False) + 1)
  if code == "xxx":
    names = rng.choice(["Neutral", "Anger", "Sadness", "Frustration", "Happiness"], 3,
                       replace=False)
  else:
    names = [_CATEGORY[code]] * 3
    names[int(rng.integers(0, 3))] = (_CATEGORY[code] if rng.random() < 0.5
                                      else str(rng.choice(_OTHER_CATEGORIES)))
  lines = [f"C-E{e}:\t{n};\t()" for e, n in zip(evaluators, names)]
  lines.append(f"C-{gender}1:\t{_CATEGORY.get(code, 'Other')};\t()")
  scores = np.clip(np.rint(np.array(_VAD[code]) + rng.normal(0.0, 0.6, (3, 3))), 1, 5).astype(int)
  lines += [f"A-E{e}:\tval {v}; act {a}; dom  {d};\t()" for e, (v, a, d) in zip(evaluators, scores)]
  v, a, d = np.clip(np.rint(np.array(_VAD[code]) + rng.normal(0.0, 0.6, 3)), 1, 5).astype(int)
  lines.append(f"A-{gender}1:\tval {v}; act {a}; dom  {d};\t()")
  return tuple(float(x) for x in scores.mean(axis=0)), tuple(lines)


def _write_labels(path: pathlib.Path, turns):
  """Writes an EmoEvaluation file: header, then one blank-line separated block per labelled turn."""
  out = [_HEADER, ""]
  for turn in turns:
    if not turn.code:
      continue
    v, a, d = turn.vad
    out.append(f"[{turn.start:.4f} - {turn.end:.4f}]\t{turn.utt_id}\t{turn.code}\t"
               f"[{v:.4f}, {a:.4f}, {d:.4f}]")
    out += [*turn.rating_lines, ""]
  path.write_text("\n".join(out) + "\n")


def _write_transcription(path: pathlib.Path, turns):
  path.write_text("".join(f"{t.utt_id} [{t.start:08.4f}-{t.end:08.4f}]: {t.text}\n"
                          for t in turns))


def _readme(seed: int, utterances_per_speaker: int, fs: int) -> str:
  return (
      "Synthetic IEMOCAP-like corpus generated by wavejax.data.synthetic "
      f"(generator version {GENERATOR_VERSION}, seed {seed}, {utterances_per_speaker} task "
      f"utterances per speaker, {fs} Hz).\n"
      "Layout, file names and label-file format follow IEMOCAP_full_release. The audio is "
      "source-filter synthesis, not recorded speech.\n")


# ----------------------------------------------------------------------------------------------
# Synthesis of one utterance.


def _prosody(rng, code: str, speaker: _Speaker) -> dict[str, float]:
  """Draws the prosodic dimensions of one utterance from its emotion and speaker."""
  if code in _EMOTION_MEANS:
    mean = np.array(_EMOTION_MEANS[code])
  elif code == "fru":
    mean = 0.5 * (np.array(_EMOTION_MEANS["neu"]) + np.array(_EMOTION_MEANS["ang"]))
  elif code == "sur":
    mean = np.array(_EMOTION_MEANS["hap"]) + (2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
  else:  # xxx: somewhere between two task emotions.
    a, b = rng.choice(list(_EMOTION_MEANS), 2, replace=False)
    w = rng.uniform()
    mean = w * np.array(_EMOTION_MEANS[a]) + (1 - w) * np.array(_EMOTION_MEANS[b])
  neutral = np.array(_EMOTION_MEANS["neu"])
  gain = _EMOTION_SEPARATION * speaker.expressivity
  noise = rng.normal(0.0, 1.0, len(_DIMS)) * _UTTERANCE_SD
  values = neutral + gain * (mean - neutral) + speaker.offset + noise
  p = dict(zip(_DIMS, values.tolist()))
  p["range_st"] = max(p["range_st"], 0.3)
  p["tempo"] = float(np.clip(p["tempo"], 2.5, 7.5))
  p["oq"] = float(np.clip(p["oq"], 0.3, 0.85))
  p["peak_db"] = min(p["peak_db"], -1.0)
  return p


def _synthesize(rng, code: str, speaker: _Speaker, channel: _Channel, fs: int) -> np.ndarray:
  """Returns one utterance as int16 samples."""
  p = _prosody(rng, code, speaker)
  duration = float(np.clip(rng.lognormal(np.log(2.7), 0.3), MIN_DURATION_S, MAX_DURATION_S))
  n = int(round(duration * fs))
  kinds, lens, vowels, accents = _segment_plan(rng, n, p["tempo"], fs)
  seg = np.repeat(np.arange(len(kinds)), lens)
  voicing = _voicing(kinds, lens, accents, seg, fs)
  f0 = _pitch_contour(rng, p, speaker, kinds, lens, accents, n, fs)
  source = _glottal_source(rng, f0, p["oq"], speaker, fs)
  source += _aspiration(rng, source, p["breath_db"])
  voiced = _formant_filter(source * voicing, _formant_tracks(kinds, vowels, seg, speaker, p, fs),
                           speaker.bw_scale, fs)
  voiced /= np.sqrt(np.mean(voiced[voicing > 0.5] ** 2)) + 1e-9
  speech = voiced + _frication(rng, kinds, lens, speaker.vtl * (1 + p["formant"]), p["tilt"], fs)
  speech = _tilt(speech, p["tilt"])
  return _record(rng, speech, p["peak_db"], channel, fs)


def _segment_plan(rng, n: int, tempo: float, fs: int):
  """Phone sequence (kind, length in samples, vowel index, accent flag) filling `n` samples."""
  scale = 5.0 / tempo
  lead, trail = rng.uniform(0.08, 0.25), rng.uniform(0.1, 0.3)
  body = n / fs - lead - trail
  kinds, lens, vowels, accents = [_SIL], [lead], [0], [False]
  t = 0.0
  while t < body:
    n_syl = int(rng.integers(3, 8))
    accented = set(rng.choice(n_syl, int(rng.integers(1, 3)), replace=False).tolist())
    for i in range(n_syl):
      syllable = _syllable(rng, scale, i in accented, i == n_syl - 1)
      for kind, length in syllable:
        kinds.append(kind)
        lens.append(length)
        vowels.append(int(rng.integers(0, len(_VOWELS))))
        accents.append(kind == _VOWEL and i in accented)
        t += length
      if t >= body:
        break
    kinds.append(_SIL)
    lens.append(rng.uniform(0.12, 0.45) * scale ** 1.5)
    vowels.append(0)
    accents.append(False)
    t += lens[-1]
  lens = np.array(lens)
  lens[1:-1] *= body / lens[1:-1].sum()
  lens[-1] = trail
  samples = np.maximum(np.round(lens * fs).astype(int), 1)
  samples[-1] = max(n - samples[:-1].sum(), 1)
  return np.array(kinds), samples, np.array(vowels), np.array(accents)


def _syllable(rng, scale: float, accented: bool, final: bool):
  """[(kind, duration_s)] of one syllable: optional onset, vowel nucleus, optional coda."""
  out = []
  if rng.random() < 0.7:
    kind = (_FRIC, _STOP, _NASAL)[int(rng.choice(3, p=(0.35, 0.4, 0.25)))]
    out.append((kind, {_FRIC: 0.09, _STOP: 0.07, _NASAL: 0.06}[kind] * scale
                * rng.lognormal(0.0, 0.2)))
  vowel = 0.11 * scale * rng.lognormal(0.0, 0.25)
  out.append((_VOWEL, vowel * (1.3 if accented else 1.0) * (1.4 if final else 1.0)))
  if rng.random() < 0.3:
    kind = _NASAL if rng.random() < 0.5 else _FRIC
    out.append((kind, 0.07 * scale * rng.lognormal(0.0, 0.2)))
  return out


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
  """Moving average with a Hann window of `width` samples (edges held)."""
  if width < 2:
    return x
  w = np.hanning(width + 2)[1:-1]
  padded = np.pad(x, (width, width), mode="edge")
  return signal.oaconvolve(padded, w / w.sum(), mode="same")[width:-width]


def _voicing(kinds, lens, accents, seg, fs: int) -> np.ndarray:
  """Per-sample amplitude of the voice source: vowels rise and fall, nasals weak, 12 ms ramps."""
  target = np.where(kinds == _VOWEL, np.where(accents, 1.25, 1.0), 0.0)
  target = np.where(kinds == _NASAL, 0.3, target)
  starts = np.cumsum(lens) - lens
  position = (np.arange(len(seg)) - starts[seg]) / lens[seg]
  hump = np.where(kinds[seg] == _VOWEL, 0.55 + 0.45 * np.sin(np.pi * position), 1.0)
  return np.clip(_smooth(target[seg] * hump, int(0.012 * fs)), 0.0, None)


def _pitch_contour(rng, p, speaker, kinds, lens, accents, n: int, fs: int) -> np.ndarray:
  """F0 in Hz per sample: declination, accent peaks and slow wobble around the speaker's level."""
  block = int(_BLOCK_S * fs)
  t = (np.arange(0, n, block) + block / 2) / fs
  total = n / fs
  st = p["pitch_st"] + rng.uniform(1.5, 4.0) * (0.5 - t / total)
  ends = np.cumsum(lens) / fs
  centers = ends - lens / fs / 2
  for c, d in zip(centers[accents], lens[accents] / fs):
    st += p["range_st"] * rng.uniform(0.6, 1.0) * np.exp(-0.5 * ((t - c) / max(d, 0.05)) ** 2)
  wobble = _smooth(rng.normal(0.0, 1.0, len(t)), 15)
  st += 0.35 * wobble / (wobble.std() + 1e-9)
  f0_blocks = np.clip(speaker.f0_hz * 2.0 ** (st / 12.0), 60.0, 500.0)
  return np.interp(np.arange(n) / fs, t, f0_blocks)


def _glottal_source(rng, f0, oq: float, speaker: _Speaker, fs: int) -> np.ndarray:
  """Derivative of a Rosenberg glottal flow with per-cycle jitter and shimmer."""
  phase0 = np.cumsum(f0) / fs
  jitter = 1.0 + speaker.jitter * rng.standard_normal(int(phase0[-1]) + 2)
  phase = np.cumsum(f0 * jitter[phase0.astype(int)]) / fs
  cycle = phase.astype(int)
  frac = phase - cycle
  sq = float(np.clip(2.5 + 12.0 * (0.6 - oq), 1.2, 6.0))  # Tense voice: fast closing phase.
  tp, tn = oq * sq / (1 + sq), oq / (1 + sq)
  flow = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                  np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))
  shimmer = np.exp(speaker.shimmer * rng.standard_normal(cycle[-1] + 1))
  return np.diff(flow * shimmer[cycle], prepend=0.0)


def _aspiration(rng, source, breath_db: float) -> np.ndarray:
  """Glottal noise at `breath_db` relative to the voice source, pulsed by the glottal cycle."""
  noise = rng.standard_normal(len(source))
  level = np.sqrt(np.mean(source ** 2)) * 10.0 ** (breath_db / 20.0)
  return noise * level * (0.5 + 0.5 * (np.abs(source) > 0))


def _formant_tracks(kinds, vowels, seg, speaker, p, fs: int) -> np.ndarray:
  """Formant frequencies (n_blocks, 5): targets per phone, consonants borrow the next vowel's."""
  targets = np.column_stack([_VOWELS[vowels], np.tile(_F45, (len(vowels), 1))])
  vowel_rows = np.flatnonzero(kinds == _VOWEL)
  nxt = np.minimum(np.searchsorted(vowel_rows, np.arange(len(kinds))), len(vowel_rows) - 1)
  targets = targets[vowel_rows[nxt]]  # Every syllable has a vowel, so `vowel_rows` is not empty.
  targets[kinds == _NASAL] = _NASAL_FORMANTS
  targets *= speaker.vtl * (1.0 + p["formant"])
  blocks = targets[seg[::int(_BLOCK_S * fs)]]
  smoothed = np.column_stack([_smooth(blocks[:, k], 5) for k in range(blocks.shape[1])])
  return np.minimum(smoothed, 0.45 * fs)


def _formant_filter(x, freqs, bw_scale: float, fs: int) -> np.ndarray:
  """Cascade of 2nd-order resonators (unit DC gain), coefficients updated every block."""
  r = np.exp(-np.pi * _BANDWIDTHS * bw_scale / fs)
  theta = 2 * np.pi * freqs / fs
  a1, a2 = -2 * r * np.cos(theta), np.broadcast_to(r ** 2, theta.shape)
  one, zero = np.ones_like(a1), np.zeros_like(a1)
  sos = np.stack([1 + a1 + a2, zero, zero, one, a1, a2], axis=-1)
  block = int(_BLOCK_S * fs)
  zi = np.zeros((freqs.shape[1], 2))
  y = np.empty_like(x)
  for k in range(len(freqs)):
    y[k * block:(k + 1) * block], zi = signal.sosfilt(sos[k], x[k * block:(k + 1) * block], zi=zi)
  return y


def _frication(rng, kinds, lens, vtl: float, tilt: float, fs: int) -> np.ndarray:
  """Band-passed noise for fricatives (s/sh/f) and stop bursts, relative to unit-RMS voice."""
  nyq = 0.45 * fs
  bands = {"s": (3500.0, 7500.0), "sh": (2000.0, 4500.0), "f": (1000.0, 7000.0),
           "burst": (1500.0, 5000.0)}
  gains = {"s": 0.25, "sh": 0.25, "f": 0.1, "burst": 0.5}
  effort = 10.0 ** (0.5 * tilt)  # Louder consonants with vocal effort.
  out = np.zeros(int(lens.sum()))
  starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
  for kind, start, length in zip(kinds, starts, lens):
    if kind == _FRIC:
      name = str(rng.choice(("s", "sh", "f")))
      env = signal.windows.tukey(length, 0.5)
    elif kind == _STOP:
      name, burst = "burst", max(int(0.3 * length), int(0.008 * fs))
      start, length = start + length - min(burst, length), min(burst, length)
      env = np.exp(-np.arange(length) / (0.004 * fs))
    else:
      continue
    lo, hi = (min(f * vtl, nyq) for f in bands[name])
    sos = signal.butter(2, (min(lo, 0.8 * hi), hi), "bandpass", fs=fs, output="sos")
    noise = signal.sosfilt(sos, rng.standard_normal(length + 64))[64:]
    noise /= np.sqrt(np.mean(noise ** 2)) + 1e-9
    out[start:start + length] += gains[name] * effort * env * noise
  return out


def _tilt(x, tilt: float) -> np.ndarray:
  """First-order shelf: positive `tilt` boosts highs over lows, negative dulls the voice."""
  alpha = float(np.clip(0.5 + 0.6 * tilt, 0.0, 0.95))
  beta = float(np.clip(0.5 - 0.6 * tilt, 0.0, 0.95))
  return signal.lfilter((1.0, -alpha), (1.0, -beta), x)


def _record(rng, speech, peak_db: float, channel: _Channel, fs: int) -> np.ndarray:
  """Applies the session channel, the loudness cue and background noise; returns int16."""
  n = len(speech)
  x = signal.oaconvolve(speech, channel.fir)[:n]
  x = signal.sosfilt(channel.highpass, x)
  x *= 10.0 ** (peak_db / 20.0) / (np.max(np.abs(x)) + 1e-12)
  noise = signal.lfilter((1.0,), (1.0, -channel.noise_pole), rng.standard_normal(n + 256))[256:]
  noise *= 10.0 ** ((channel.noise_db + rng.normal(0.0, 1.0)) / 20.0) / noise.std()
  hum = 10.0 ** (channel.hum_db / 20.0) * np.sqrt(2) * np.sin(
      2 * np.pi * channel.hum_hz * np.arange(n) / fs + rng.uniform(0, 2 * np.pi))
  y = np.clip(x + noise + hum, -1.0, 32767 / 32768)
  return np.round(y * 32767).astype(np.int16)
