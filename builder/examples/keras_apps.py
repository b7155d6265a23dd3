"""Keras applications with seeded random weights that are numerically healthy: one forward pass in
training mode over a seeded batch sets each BatchNorm's statistics (README, "Recipes", says why)."""

from __future__ import annotations

import numpy as np


def application(name: str, input_shape=(224, 224, 3), classes: int = 1000, calibration_batch: int = 16,
                seed: int = 0, **kwargs):
    """keras.applications.<name> (e.g. MobileNetV2, ResNet50) with random weights, logits output, and
    BatchNorm statistics from one seeded pass over inputs uniform in [-1, 1]."""
    import keras

    model = getattr(keras.applications, name)(input_shape=tuple(input_shape), classes=classes, weights=None,
                                              classifier_activation=None, **kwargs)
    batch = np.random.default_rng(seed).uniform(-1.0, 1.0, (calibration_batch, *input_shape)).astype("float32")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(batch, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    return model
