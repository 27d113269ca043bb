import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras

import tf_admm
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude
from tests.conftest import random_batch, small_model


def _masks(seed=0, keep=0.3):
  rng = np.random.default_rng(seed)
  return {'conv': rng.random((3, 3, 1, 4)) < keep,
          'dense': rng.random((64, 3)) < keep}


def _compile(model, optimizer):
  model.compile(optimizer,
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


class PrunedEntries(keras.callbacks.Callback):
  """Records the largest |w| over pruned entries after every step."""

  def __init__(self, masks):
    super().__init__()
    self.masks = masks
    self.largest = []

  def on_train_batch_end(self, batch, logs=None):
    kernels = {w.layer.name: w.layer.kernel.numpy()
               for w in tf_admm.pruning_wrapper.wrapped_layers(self.model)}
    self.largest.append(max(np.abs(kernels[n][~m]).max()
                            for n, m in self.masks.items()))


@pytest.mark.parametrize('optimizer', [
    lambda: keras.optimizers.Adam(0.05),
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    lambda: keras.optimizers.legacy.Adam(0.05)])
def test_pruned_weights_are_zero_after_every_step(optimizer):
  masks = _masks()
  model = small_model()
  before = {l.name: l.kernel.numpy() for l in tf_admm.prunable_layers(model)}
  wrapped = _compile(tf_admm.to_pruning_wrappers(model, masks), optimizer())
  assert all(isinstance(l, PruneLowMagnitude)
             for l in wrapped.layers if 'conv' in l.name or 'dense' in l.name)
  recorder = PrunedEntries(masks)
  x, y = random_batch(64)
  wrapped.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[
      tfmot.sparsity.keras.UpdatePruningStep(), recorder])
  assert len(recorder.largest) == 16 and max(recorder.largest) == 0.0
  for wrapper in tf_admm.pruning_wrapper.wrapped_layers(wrapped):
    kernel = wrapper.layer.kernel.numpy()
    mask = masks[wrapper.layer.name]
    assert not np.allclose(kernel[mask], before[wrapper.layer.name][mask])
  # The input model is untouched.
  for layer in tf_admm.prunable_layers(model):
    np.testing.assert_array_equal(layer.kernel.numpy(), before[layer.name])


def test_strip_pruning_keeps_exactly_the_masks():
  masks = _masks(seed=1)
  wrapped = _compile(tf_admm.to_pruning_wrappers(small_model(), masks),
                     keras.optimizers.Adam(0.01))
  wrapped.fit(*random_batch(32), epochs=1, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
  for name, mask in masks.items():
    np.testing.assert_array_equal(stripped.get_layer(name).kernel.numpy() != 0,
                                  mask)
  x, _ = random_batch(8, seed=5)
  np.testing.assert_allclose(stripped.predict(x, verbose=0),
                             wrapped.predict(x, verbose=0), rtol=1e-6)


def test_admm_model_converts_with_its_own_masks():
  model = tf_admm.attach_admm(small_model(), ['conv', 'dense'])
  _compile(model, 'adam')
  model.fit(*random_batch(32), epochs=1, verbose=0, callbacks=[
      tf_admm.AdmmCallback(tf_admm.CompressionRate(4), update_every_epochs=1)])
  want = tf_admm.admm_masks(model)
  wrapped = tf_admm.to_pruning_wrappers(model)
  assert not wrapped.losses  # the ADMM penalty is gone
  got = tf_admm.masks_of(wrapped)
  assert sorted(got) == ['conv', 'dense']
  for name in got:
    np.testing.assert_array_equal(got[name], want[name])
  total = sum(m.size for m in got.values())
  assert sum(m.sum() for m in got.values()) == round(total / 4)


@pytest.mark.parametrize('filename', ['wrapped.keras', 'wrapped.h5',
                                      'saved_model'])
def test_save_and_load_mid_retraining_keeps_masks(tmp_path, filename):
  masks = _masks(seed=2)
  wrapped = _compile(tf_admm.to_pruning_wrappers(small_model(), masks),
                     keras.optimizers.Adam(0.05))
  x, y = random_batch(64)
  step = tfmot.sparsity.keras.UpdatePruningStep
  wrapped.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[step()])
  wrapped.save(tmp_path / filename)
  loaded = keras.models.load_model(tmp_path / filename)  # no custom_objects
  recorder = PrunedEntries(masks)
  loaded.fit(x, y, batch_size=16, epochs=2, verbose=0,
             callbacks=[step(), recorder])
  assert max(recorder.largest) == 0.0
  got = tf_admm.masks_of(loaded)
  for name, mask in masks.items():
    np.testing.assert_array_equal(got[name], mask)
    np.testing.assert_array_equal(
        loaded.get_layer(f'fixed_mask_prune_low_magnitude_{name}').layer
        .kernel.numpy() != 0, mask)


def test_bad_masks_are_rejected():
  model = small_model()
  with pytest.raises(ValueError, match="'flatten', which is not a prunable"):
    tf_admm.to_pruning_wrappers(model, {'flatten': np.ones(3)})
  with pytest.raises(ValueError, match='shape'):
    tf_admm.to_pruning_wrappers(model, {'dense': np.ones((3, 3))})
  with pytest.raises(ValueError, match='no AdmmRegularizer'):
    tf_admm.to_pruning_wrappers(model)
  with pytest.raises(ValueError, match='No masks'):
    tf_admm.to_pruning_wrappers(model, {})
