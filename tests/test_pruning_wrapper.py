"""Final masks as tfmot pruning wrappers: masked retraining, strip, save/load.

Only `import tf_admm.pruning_wrapper` registers the wrapper classes here:
models load with `keras.models.load_model` and no custom_objects.
"""

import numpy as np
import pytest
import tf_keras as keras

import tf_admm
import tf_admm.pruning_wrapper
from tf_admm import keras_compat
from tests.conftest import nested_model, random_batch, separable_cnn
from tests.conftest import small_model

L = keras.layers
PruneLowMagnitude = tf_admm.pruning_wrapper.PruneLowMagnitude


def _masks(seed=0, keep=0.3):
  rng = np.random.default_rng(seed)
  return {'conv/kernel': rng.random((3, 3, 1, 4)) < keep,
          'dense/kernel': rng.random((64, 3)) < keep}


def _random_masks(model, seed=0, keep=0.3):
  """Random masks for every prunable weight of `model`, none all-ones."""
  rng = np.random.default_rng(seed)
  masks = {}
  for weight in tf_admm.prunable_weights(model):
    mask = rng.random(weight.shape) < keep
    mask.flat[0], mask.flat[-1] = True, False  # never all 0 or all 1
    masks[weight.path] = mask
  return masks


def _compile(model, optimizer):
  model.compile(optimizer,
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _pruned_variables(model):
  """{weight path: the variable a pruning wrapper masks} of a wrapped model."""
  return {f'{prefix}/{attribute}': getattr(wrapper.layer, attribute)
          for prefix, wrapper in tf_admm.pruning_wrapper.wrapped_layers(model)
          for attribute in wrapper.pruned_weights}


class PrunedEntries(keras.callbacks.Callback):
  """Records the largest |w| over pruned entries after every step."""

  def __init__(self, masks):
    super().__init__()
    self.masks = masks
    self.largest = []

  def on_train_batch_end(self, batch, logs=None):
    variables = _pruned_variables(self.model)
    assert sorted(variables) == sorted(self.masks)
    self.largest.append(max(np.abs(variables[p].numpy()[~m]).max()
                            for p, m in self.masks.items()))


def _values(model):
  return {w.path: w.variable.numpy() for w in tf_admm.prunable_weights(model)}


@pytest.mark.parametrize('optimizer', [
    lambda: keras.optimizers.Adam(0.05),
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    lambda: keras.optimizers.legacy.Adam(0.05)])
def test_pruned_weights_are_zero_after_every_step(optimizer):
  masks = _masks()
  model = small_model()
  before = _values(model)
  wrapped = _compile(tf_admm.to_pruning_wrappers(model, masks), optimizer())
  assert [type(l).__name__ for l in wrapped.layers] == [
      'FixedMaskPruneLowMagnitude', 'Flatten', 'FixedMaskPruneLowMagnitude']
  assert all(isinstance(wrapped.layers[i], PruneLowMagnitude) for i in (0, 2))
  # Wrapping hard-prunes: masked entries are zero before any step.
  for path, variable in _pruned_variables(wrapped).items():
    np.testing.assert_array_equal(variable.numpy(),
                                  np.where(masks[path], before[path], 0.0))
  recorder = PrunedEntries(masks)
  x, y = random_batch(64)
  wrapped.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[tf_admm.update_pruning_step(), recorder])
  assert len(recorder.largest) == 16 and max(recorder.largest) == 0.0
  for path, variable in _pruned_variables(wrapped).items():
    kept = variable.numpy()[masks[path]]
    assert not np.allclose(kept, before[path][masks[path]])  # it trained
    assert np.count_nonzero(kept) == masks[path].sum()
  # The input model is untouched.
  for path, value in _values(model).items():
    np.testing.assert_array_equal(value, before[path])


def test_strip_pruning_keeps_exactly_the_masks():
  masks = _masks(seed=1)
  wrapped = _compile(tf_admm.to_pruning_wrappers(small_model(), masks),
                     keras.optimizers.Adam(0.01))
  wrapped.fit(*random_batch(32), epochs=1, verbose=0,
              callbacks=[tf_admm.update_pruning_step()])
  stripped = tf_admm.strip_pruning(wrapped)
  assert not any(isinstance(l, PruneLowMagnitude) for l in stripped.layers)
  values = _values(stripped)
  assert sorted(values) == sorted(masks)
  for path, mask in masks.items():
    np.testing.assert_array_equal(values[path] != 0, mask)
  x, _ = random_batch(8, seed=5)
  np.testing.assert_allclose(stripped.predict(x, verbose=0),
                             wrapped.predict(x, verbose=0), rtol=1e-6)


def test_admm_model_converts_with_its_own_masks():
  model = tf_admm.attach_admm(small_model(), tf_admm.CompressionRate(4))
  _compile(model, 'adam')
  model.fit(*random_batch(32), epochs=2, verbose=0,
            callbacks=[tf_admm.AdmmCallback(tf_admm.Stages())])
  assert model.losses  # the ADMM penalty
  want = tf_admm.admm_masks(model)
  trained = _values(model)
  wrapped = tf_admm.to_pruning_wrappers(model)
  assert not wrapped.losses  # the ADMM penalty is gone
  got = tf_admm.masks_of(wrapped)
  assert sorted(got) == ['conv/kernel', 'dense/kernel']
  for path in got:
    np.testing.assert_array_equal(got[path], want[path])
  total = sum(m.size for m in got.values())
  assert total == 228
  assert sum(m.sum() for m in got.values()) == round(total / 4)
  # The wrapped weights are the ADMM-trained ones, hard-pruned.
  for path, variable in _pruned_variables(wrapped).items():
    np.testing.assert_array_equal(variable.numpy(),
                                  np.where(want[path], trained[path], 0.0))
  # The ADMM model is left as it was.
  for path, value in _values(model).items():
    np.testing.assert_array_equal(value, trained[path])


def _save_load_and_retrain(wrapped, masks, x, y, path, update_step=True):
  """Fits, saves to `path`, loads, fits again (with tfmot's UpdatePruningStep
  callback, or without); checks the masks hold."""

  def step():
    return [tf_admm.update_pruning_step()] if update_step else []

  wrapped.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=step())
  wrapped.save(path)
  loaded = keras.models.load_model(path)  # no custom_objects
  assert sorted(tf_admm.masks_of(loaded)) == sorted(masks)
  before = {p: v.numpy() for p, v in _pruned_variables(loaded).items()}
  recorder = PrunedEntries(masks)
  loaded.fit(x, y, batch_size=16, epochs=2, verbose=0,
             callbacks=step() + [recorder])
  assert len(recorder.largest) == 2 * len(x) // 16
  assert max(recorder.largest) == 0.0
  got = tf_admm.masks_of(loaded)
  for p, mask in masks.items():
    np.testing.assert_array_equal(got[p], mask)
  after = _pruned_variables(loaded)
  for p, mask in masks.items():
    value = after[p].numpy()
    np.testing.assert_array_equal(value != 0, mask)
    assert not np.allclose(value, before[p])  # it kept training
  return loaded


FORMATS = ['wrapped.keras', 'wrapped.h5', 'saved_model']


@pytest.mark.parametrize('filename', FORMATS)
def test_save_and_load_mid_retraining_keeps_masks(tmp_path, filename):
  masks = _masks(seed=2)
  wrapped = _compile(tf_admm.to_pruning_wrappers(small_model(), masks),
                     keras.optimizers.Adam(0.05))
  x, y = random_batch(64)
  loaded = _save_load_and_retrain(wrapped, masks, x, y, tmp_path / filename)
  for path, mask in masks.items():
    layer = path.split('/')[0]
    np.testing.assert_array_equal(
        loaded.get_layer(f'fixed_mask_prune_low_magnitude_{layer}').layer
        .kernel.numpy() != 0, mask)


@pytest.mark.parametrize('filename', ['wrapped.keras', 'wrapped.h5'])
def test_retraining_needs_no_update_pruning_step(tmp_path, filename):
  masks = _masks(seed=7)
  wrapped = _compile(tf_admm.to_pruning_wrappers(small_model(), masks),
                     keras.optimizers.Adam(0.05))
  x, y = random_batch(64)
  loaded = _save_load_and_retrain(wrapped, masks, x, y, tmp_path / filename,
                                  update_step=False)
  values = _values(tf_admm.strip_pruning(loaded))
  for path, mask in masks.items():
    np.testing.assert_array_equal(values[path] != 0, mask)


def _image_batch(n=64, seed=0):
  """A batch for separable_cnn()."""
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 10, 10, 3)).astype(np.float32),
          rng.integers(0, 3, size=n))


@pytest.mark.parametrize('filename', [
    'wrapped.keras', 'wrapped.h5', 'saved_model'])
def test_depthwise_and_pointwise_kernels_hold_their_masks(tmp_path, filename):
  model = separable_cnn()
  masks = _random_masks(model, seed=3, keep=0.5)
  assert sorted(masks) == ['dw/depthwise_kernel', 'fc/kernel',
                           'sep/depthwise_kernel', 'sep/pointwise_kernel',
                           'up/kernel']
  wrapped = _compile(tf_admm.to_pruning_wrappers(model, masks),
                     keras.optimizers.Adam(0.05))
  sep = wrapped.get_layer('fixed_mask_prune_low_magnitude_sep')
  assert sep.pruned_weights == ['depthwise_kernel', 'pointwise_kernel']
  assert len(keras_compat.wrapper_masks(sep)) == 2
  dw = wrapped.get_layer('fixed_mask_prune_low_magnitude_dw')
  assert dw.pruned_weights == ['depthwise_kernel']
  up = wrapped.get_layer('fixed_mask_prune_low_magnitude_up')
  assert up.pruned_weights == ['kernel']
  x, y = _image_batch()
  loaded = _save_load_and_retrain(wrapped, masks, x, y, tmp_path / filename)
  stripped = tf_admm.strip_pruning(loaded)
  values = _values(stripped)
  for path, mask in masks.items():
    np.testing.assert_array_equal(values[path] != 0, mask)
  np.testing.assert_allclose(stripped.predict(x[:8], verbose=0),
                             loaded.predict(x[:8], verbose=0), rtol=1e-5,
                             atol=1e-6)


def test_depthwise_kernel_holds_its_mask_through_h5(tmp_path):
  # One pruned weight per wrapper: H5 works (see H5_TWO_MASKS).
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((10, 10, 3)),
      L.DepthwiseConv2D(3, depth_multiplier=2, name='dw'),
      L.Flatten(name='flatten'),
      L.Dense(3, name='fc'),
  ])
  masks = _random_masks(model, seed=6, keep=0.5)
  assert sorted(masks) == ['dw/depthwise_kernel', 'fc/kernel']
  wrapped = _compile(tf_admm.to_pruning_wrappers(model, masks),
                     keras.optimizers.Adam(0.05))
  x, y = _image_batch()
  loaded = _save_load_and_retrain(wrapped, masks, x, y, tmp_path / 'dw.h5')
  values = _values(tf_admm.strip_pruning(loaded))
  for path, mask in masks.items():
    np.testing.assert_array_equal(values[path] != 0, mask)


def test_only_the_masked_weight_of_a_separable_layer_is_pruned():
  model = separable_cnn()
  mask = _random_masks(model, seed=4)['sep/pointwise_kernel']
  wrapped = _compile(
      tf_admm.to_pruning_wrappers(model, {'sep/pointwise_kernel': mask}),
      keras.optimizers.Adam(0.05))
  assert [type(l).__name__ for l in wrapped.layers[1:]] == [
      'FixedMaskPruneLowMagnitude', 'BatchNormalization', 'DepthwiseConv2D',
      'Conv2DTranspose', 'Flatten', 'Dense']
  assert wrapped.layers[1].pruned_weights == ['pointwise_kernel']
  wrapped.fit(*_image_batch(), batch_size=16, epochs=1, verbose=0,
              callbacks=[tf_admm.update_pruning_step()])
  values = _values(tf_admm.strip_pruning(wrapped))
  np.testing.assert_array_equal(values['sep/pointwise_kernel'] != 0, mask)
  for path in ('sep/depthwise_kernel', 'dw/depthwise_kernel', 'up/kernel',
               'fc/kernel'):
    assert np.count_nonzero(values[path]) == values[path].size


def test_nested_model_wraps_retrains_and_strips():
  model = nested_model()
  masks = _random_masks(model, seed=5)
  assert sorted(masks) == ['block/ic/kernel', 'block/id/kernel',
                           'out/kernel']
  wrapped = _compile(tf_admm.to_pruning_wrappers(model, masks),
                     keras.optimizers.Adam(0.05))
  block = wrapped.get_layer('block')
  assert [type(l).__name__ for l in block.layers] == [
      'FixedMaskPruneLowMagnitude', 'BatchNormalization', 'Flatten',
      'FixedMaskPruneLowMagnitude']
  assert isinstance(wrapped.get_layer('fixed_mask_prune_low_magnitude_out'),
                    PruneLowMagnitude)
  assert sorted(tf_admm.masks_of(wrapped)) == sorted(masks)
  before = {p: v.numpy() for p, v in _pruned_variables(wrapped).items()}
  recorder = PrunedEntries(masks)
  x, y = random_batch(64)
  wrapped.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[tf_admm.update_pruning_step(), recorder])
  assert len(recorder.largest) == 8 and max(recorder.largest) == 0.0
  for path, variable in _pruned_variables(wrapped).items():
    assert not np.allclose(variable.numpy(), before[path])
  stripped = tf_admm.strip_pruning(wrapped)
  assert not any(isinstance(l, PruneLowMagnitude)
                 for l in stripped.get_layer('block').layers)
  values = _values(stripped)
  assert sorted(values) == sorted(masks)
  for path, mask in masks.items():
    np.testing.assert_array_equal(values[path] != 0, mask)
  np.testing.assert_allclose(stripped.predict(x[:8], verbose=0),
                             wrapped.predict(x[:8], verbose=0), rtol=1e-5,
                             atol=1e-6)


def test_bad_masks_are_rejected():
  model = small_model()
  listing = 'prunable weights are: conv/kernel, dense/kernel'
  with pytest.raises(ValueError, match="'flatten/kernel', which is not a "
                     f'prunable weight; {listing}'):
    tf_admm.to_pruning_wrappers(model, {'flatten/kernel': np.ones(3)})
  # Masks keyed by layer name (the old API) are not weight paths.
  with pytest.raises(ValueError, match=f"'conv', which is not a prunable "
                     f'weight; {listing}'):
    tf_admm.to_pruning_wrappers(model, {'conv': _masks()['conv/kernel']})
  with pytest.raises(ValueError, match=r"'dense/kernel' has shape \(3, 3\)"):
    tf_admm.to_pruning_wrappers(model, {'dense/kernel': np.ones((3, 3))})
  with pytest.raises(ValueError, match='no ADMM regularizer'):
    tf_admm.to_pruning_wrappers(model)
  with pytest.raises(ValueError, match='No masks'):
    tf_admm.to_pruning_wrappers(model, {})
  # Masks hold zeros only: a quantized model keeps its levels under ADMM.
  quantized = tf_admm.attach_admm(model, constraint={
      'dense': tf_admm.Quantize('ternary')})
  with pytest.raises(ValueError, match=r'Quantized weights \(dense/kernel\).*'
                     r'tf_admm\.remove_admm'):
    tf_admm.to_pruning_wrappers(quantized, _random_masks(model))
