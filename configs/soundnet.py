"""SoundNet-8 trained from scratch (Aytar et al. 2016; paper Sec. 2, 4.1).

The whole waveform (no windowing) through 8 strided convolutions with batch normalisation and 3
max-poolings, flattened, dense 64 with dropout 0.5, then the classes. Usage:
`--config=configs/soundnet.py[:task,fold=k]`.

Its deepest layers see one or two time steps per utterance, so their batch statistics vary from
batch to batch and the running averages do not describe the trained weights: evaluated with them,
a SoundNet trained on the built-in corpus predicted mostly one class (fold 1, 4 epochs: 37.5 %
on training utterances vs 76.6 % with batch statistics). `train.precise_bn_batches` re-estimates
the statistics before each evaluation (82.8 % on the same utterances; test 45.8 -> 72.9 %).
"""

from wavejax import config


def get_config(arg: str = ""):
  return config.get_config("soundnet", arg)
