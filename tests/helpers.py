"""Shared test set-up: a tiny built-in corpus and a small, fast SimpleNet-CNN config."""

import pathlib
import subprocess
import sys

import configs.simplenet_cnn as simplenet_cnn_config
from wavejax import config as wavejax_config
from wavejax.config import models as model_configs
from wavejax.models import frontends, leaf, sincnet, zoo

REPO = pathlib.Path(__file__).resolve().parents[1]

# Field overrides that make a run take seconds: 6 utterances per speaker (60 in all), 1 s clips
# (25 windows), 4 validation utterances, batch 8.
TINY = {
    "data.builtin.utterances_per_speaker": 6,
    "data.builtin.clip_seconds": 1.0,
    "data.val_size": 4,
    "train.batch_size": 8,
    "train.eval_batch_size": 16,
    "train.num_epochs": 2,
}


def tiny_config(cache_dir, **overrides):
  config = simplenet_cnn_config.get_config()
  for key, value in {**TINY, "data.cache_dir": str(cache_dir), **overrides}.items():
    wavejax_config.set_field(config, key, value)
  return config


def tiny_flags(cache_dir, **overrides):
  """The same overrides as `--config.a.b=value` command-line flags."""
  values = {**TINY, "data.cache_dir": str(cache_dir), **overrides}
  return [f"--config.{key}={value}" for key, value in values.items()]


FRONTEND_SECTIONS = {
    frontends.SimpleNetFrontend: model_configs.simplenet_frontend_config,
    frontends.WaveRNNFrontend: model_configs.wavernn_frontend_config,
    frontends.TrigeorgisFrontend: model_configs.trigeorgis_frontend_config,
    frontends.SoundNetFrontend: model_configs.soundnet_frontend_config,
    sincnet.SincNetFrontend: model_configs.sincnet_frontend_config,
    leaf.LEAFFrontend: model_configs.leaf_frontend_config,
}


def frontend(cls, **fields):
  """Front-end `cls` with its config defaults at 16 kHz, as the zoo builds it; `fields` (module
  attribute names) replace them."""
  return zoo.build(cls, FRONTEND_SECTIONS[cls](), **{"sample_rate": 16000, **fields})


# A process that takes a lock file and keeps it (`hold_lock`).
HOLD = """
import sys, time
from wavejax.training import sweep
lock = sweep.acquire_lock(sys.argv[1], timeout_s=3600)
print("held" if lock else "busy", flush=True)
time.sleep(600)
"""


def hold_lock(path):
  """A process holding the lock file `path` (kill it to leave a dead holder's lock)."""
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  return holder
