"""ADMM on real MNIST: the residual shrinks and hard pruning costs little."""

import numpy as np
import pytest

import tf_admm
from tf_admm import projections
from tf_admm.keras_compat import keras

RATE = tf_admm.CompressionRate(10)
PER_LAYER = {keras.layers.Conv2D: RATE, keras.layers.Dense: RATE}


def _accuracy(model, x, y):
  logits = model.predict(x, batch_size=1000, verbose=0)
  return float(np.mean(np.argmax(logits, -1) == y))


@pytest.mark.slow
def test_admm_beats_magnitude_pruning_at_10x(mnist, pretrained_lenet5):
  x, y, x_test, y_test = mnist
  dense = pretrained_lenet5
  keep = tf_admm.keep_counts(dense, per_layer=PER_LAYER)

  magnitude_masks = {
      w.path: projections.keep_top_k(w.variable.numpy(), keep[w.path]).mask
      for w in tf_admm.prunable_weights(dense)}
  magnitude = tf_admm.to_pruning_wrappers(dense, magnitude_masks)
  magnitude_accuracy = _accuracy(magnitude, x_test, y_test)

  admm = tf_admm.attach_admm(dense, per_layer=PER_LAYER, rho=1e-2)
  admm.compile(keras.optimizers.Adam(1e-3),
               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  callback = tf_admm.AdmmCallback(tf_admm.Stages(rho_growth=1.3))
  history = admm.fit(x, y, batch_size=128, epochs=6, verbose=0,
                     callbacks=[callback])
  residuals = history.history['admm_primal_residual']
  admm_accuracy = _accuracy(tf_admm.to_pruning_wrappers(admm), x_test, y_test)

  print(f'relative primal residual per update: {np.round(residuals, 4)}; '
        f'test accuracy after hard pruning to 10x: ADMM {admm_accuracy:.4f}, '
        f'magnitude {magnitude_accuracy:.4f}')
  assert residuals[-1] < 0.75 * residuals[0]
  assert all(later < earlier * 1.05
             for earlier, later in zip(residuals, residuals[1:]))
  assert admm_accuracy > magnitude_accuracy + 0.10
  assert admm_accuracy > 0.90
