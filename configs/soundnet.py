"""SoundNet-8 trained from scratch (Aytar et al. 2016; paper Sec. 2, 4.1).

The whole waveform (no windowing) through 8 strided convolutions with batch normalisation and 3
max-poolings, flattened, dense 64 with dropout 0.5, then the classes. Usage:
`--config=configs/soundnet.py[:task,fold=k]`.
"""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  config = wavejax_config.base_config()
  config.model.name = "soundnet"
  config.model.frontend = wavejax_config.soundnet_frontend_config()
  config.model.head = wavejax_config.dense_head_config(dropout=0.5)
  return wavejax_config.apply_arg(config, arg)
