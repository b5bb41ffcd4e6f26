"""SpecNet (paper Sec. 4.1): SimpleNet-CNN with its initial FIR filters frozen.

A fixed magnitude spectrogram (the same 64 band-pass filters, 40 ms windows and mean |y| pooling
as SimpleNet's initial front-end) into the same CNN head. Usage:
`--config=configs/specnet.py[:task,fold=k]`.
"""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  config = wavejax_config.base_config()
  config.model.name = "specnet"
  config.model.frontend = wavejax_config.simplenet_frontend_config()
  config.model.frontend.trainable = False
  config.model.head = wavejax_config.cnn_head_config()
  return wavejax_config.apply_arg(config, arg)
