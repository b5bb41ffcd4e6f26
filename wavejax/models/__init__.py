"""Flax modules: waveform front-ends, high-level heads and the named models built from them."""

from wavejax.models.zoo import MODELS, Classifier, create_model, frontend_kernel

__all__ = ["MODELS", "Classifier", "create_model", "frontend_kernel"]
