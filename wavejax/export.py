r"""Export a trained run for inference without wavejax.

  python -m wavejax.export --workdir=RUN [--fold=k] --format=stablehlo|onnx --out=F \
      [--batch_size=N]

writes F and its metadata F.json; the formats and how to run them: `wavejax.inference.export`.
"""

from __future__ import annotations

from absl import flags

from wavejax import cli
from wavejax.inference import export
from wavejax.inference.model import load_model


def define_flags() -> None:
  """The CLI's flags (defined only when run as a script, like `wavejax.predict`'s)."""
  flags.DEFINE_string("workdir", None, "The training run (its --workdir).")
  flags.DEFINE_integer("fold", None, "Fold whose model to export (default: the first fold with a "
                       "best checkpoint).")
  flags.DEFINE_enum("format", "stablehlo", export.FORMATS, "stablehlo (JAX's jax.export) or onnx.")
  flags.DEFINE_string("out", None, "The file to write; its metadata go to <out>.json.")
  flags.DEFINE_integer("batch_size", None, "Fixed batch dimension (stablehlo default: any "
                       "batch size; onnx default: 1).")


def main(argv) -> int:
  options = flags.FLAGS
  if len(argv) > 1 or options.workdir is None or options.out is None:
    cli.fail("wavejax", "usage: python -m wavejax.export --workdir=RUN [--fold=k] "
             "--format=stablehlo|onnx --out=FILE [--batch_size=N]")
  loaded = load_model(options.workdir, options.fold)
  with export.quiet_converter_logs():
    info = export.export(loaded, options.format, options.out, options.batch_size)
  batch = info["batch_size"] or "any"
  print(f"{options.out}: {info['model']} (fold {info['fold']}, epoch {info['epoch']}) as "
        f"{info['format']}, input [{batch}, {info['num_samples']}] float32 at "
        f"{info['sample_rate']} Hz -> probabilities of {', '.join(info['classes'])}; metadata in "
        f"{export.sidecar_path(options.out)}")
  return 0


if __name__ == "__main__":
  define_flags()
  cli.run(main, "wavejax")
