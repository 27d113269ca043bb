import numpy as np
import pytest

import tf_admm
from tf_admm.constraints import KeepLargest
from tf_admm.keras_compat import keras
from tests.conftest import random_batch, separable_cnn, small_model


def _paths(model):
  return [w.path for w, _ in tf_admm.admm_weights(model)]


def test_attach_and_remove_keep_weights_and_structure():
  model = small_model()
  admm = tf_admm.attach_admm(model, per_layer={'dense': tf_admm.Sparsity(0.5)},
                             rho=0.1)
  assert _paths(admm) == ['dense/kernel']
  assert len(admm.losses) == 1
  for got, want in zip(admm.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(got, want)
  plain = tf_admm.remove_admm(admm)
  assert not tf_admm.admm_weights(plain) and not plain.losses
  for got, want in zip(plain.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(got, want)


def test_targets_become_constraints_given_once():
  model = small_model()  # conv kernel 36 weights, dense kernel 192
  admm = tf_admm.attach_admm(
      model, tf_admm.CompressionRate(4),
      per_layer={'conv': tf_admm.KeepRatio(0.5)})
  constraints = {w.path: r.constraint for w, r in tf_admm.admm_weights(admm)}
  assert constraints == {
      'conv/kernel': KeepLargest(18, tf_admm.KeepRatio(0.5)),
      'dense/kernel': KeepLargest(
          tf_admm.keep_counts(model, tf_admm.CompressionRate(4),
                              per_layer={'conv': tf_admm.KeepRatio(0.5)})[
                                  'dense/kernel'],
          tf_admm.CompressionRate(4))}


def test_masks_zero_the_weights_and_bound_the_targets():
  model = small_model()
  mask = np.random.default_rng(0).random((3, 3, 1, 4)) < 0.5
  admm = tf_admm.attach_admm(model, per_layer={'conv': tf_admm.KeepRatio(0.25)},
                             masks={'conv/kernel': mask})
  kernel = admm.get_layer('conv').kernel.numpy()
  assert not kernel[~mask].any()
  np.testing.assert_array_equal(
      admm.get_layer('conv').kernel_regularizer.mask.numpy(), mask)
  with pytest.raises(ValueError, match='mask allows only'):
    tf_admm.attach_admm(model, per_layer={'conv': tf_admm.KeepRatio(0.9)},
                        masks={'conv/kernel': mask})


def test_functional_model_keeps_its_own_regularizer():
  inputs = keras.Input((6, 6, 1))
  hidden = keras.layers.Conv2D(4, 3, name='conv',
                               kernel_regularizer='l2')(inputs)
  outputs = keras.layers.Dense(3, name='dense')(keras.layers.Flatten()(hidden))
  model = keras.Model(inputs, outputs)
  admm = tf_admm.attach_admm(model, tf_admm.Sparsity(0.5), rho=0.1)
  conv_regularizer = admm.get_layer('conv').kernel_regularizer
  assert isinstance(conv_regularizer.base, keras.regularizers.L2)
  plain = tf_admm.remove_admm(admm)
  assert isinstance(plain.get_layer('conv').kernel_regularizer,
                    keras.regularizers.L2)
  assert plain.get_layer('dense').kernel_regularizer is None
  x, _ = random_batch(4)
  np.testing.assert_allclose(plain.predict(x, verbose=0),
                             model.predict(x, verbose=0), rtol=1e-6)


def test_bad_input_is_rejected():
  model = small_model()
  with pytest.raises(ValueError, match=r"'nope'\] matches no prunable layer"):
    tf_admm.attach_admm(model, per_layer={'nope': tf_admm.Sparsity(0.5)})
  with pytest.raises(ValueError, match='shape'):
    tf_admm.attach_admm(model, tf_admm.Sparsity(0.5),
                        masks={'dense/kernel': np.ones((2, 2))})
  with pytest.raises(ValueError, match="'flatten/kernel', which is not"):
    tf_admm.attach_admm(model, tf_admm.Sparsity(0.5),
                        masks={'flatten/kernel': np.ones((2, 2))})
  with pytest.raises(ValueError, match='no target puts under ADMM'):
    tf_admm.attach_admm(model, per_layer={'conv': tf_admm.Sparsity(0.5)},
                        masks={'dense/kernel': np.ones((64, 3))})
  with pytest.raises(ValueError, match='give a `target`'):
    tf_admm.attach_admm(model)
  admm = tf_admm.attach_admm(model, tf_admm.Sparsity(0.5))
  with pytest.raises(ValueError, match='already under ADMM'):
    tf_admm.attach_admm(admm, tf_admm.Sparsity(0.5))
  with pytest.raises(ValueError, match='not built'):
    tf_admm.attach_admm(keras.Sequential([keras.layers.Dense(3)]),
                        tf_admm.Sparsity(0.5))

  class Subclassed(keras.Model):

    def call(self, x):
      return x

  with pytest.raises(ValueError, match='subclassed'):
    tf_admm.attach_admm(Subclassed(), tf_admm.Sparsity(0.5))


@pytest.mark.parametrize('filename', ['model.keras', 'model.h5'])
def test_saved_model_keeps_the_constraints(tmp_path, filename):
  model = tf_admm.attach_admm(small_model(), tf_admm.CompressionRate(5),
                              rho=0.05)
  want = {w.path: r.constraint for w, r in tf_admm.admm_weights(model)}
  x, _ = random_batch()
  model.save(tmp_path / filename)
  loaded = keras.models.load_model(tmp_path / filename)
  pairs = tf_admm.admm_weights(loaded)
  assert {w.path: r.constraint for w, r in pairs} == want
  assert all(r.initial_rho == pytest.approx(0.05) for _, r in pairs)
  np.testing.assert_allclose(loaded.predict(x, verbose=0),
                             model.predict(x, verbose=0), rtol=1e-6)


def test_admm_masks_need_a_started_admm():
  model = tf_admm.attach_admm(small_model(), tf_admm.Sparsity(0.5))
  with pytest.raises(ValueError, match='never started'):
    tf_admm.admm_masks(model)
  with pytest.raises(ValueError, match='no ADMM regularizer'):
    tf_admm.admm_masks(small_model())


def test_constraints_by_layer_fit_each_named_layer():
  model = small_model()
  admm = tf_admm.attach_admm(model, constraint={
      'conv': tf_admm.Quantize('ternary'),
      'dense': tf_admm.Quantize('uniform', bits=2, per_channel=False)})
  fitted = {w.path: r.constraint for w, r in tf_admm.admm_weights(admm)}
  assert fitted == {
      'conv/kernel': tf_admm.Quantize('ternary', axis=-1),
      'dense/kernel': tf_admm.Quantize('uniform', bits=2, per_channel=False)}
  only_conv = tf_admm.attach_admm(
      model, tf_admm.KeepRatio(0.5),
      constraint={'conv': KeepLargest()})
  assert [w.path for w, _ in tf_admm.admm_weights(only_conv)] == [
      'conv/kernel']
  with pytest.raises(ValueError, match="given for fc9, which are not layers"):
    tf_admm.attach_admm(model, constraint={'fc9': tf_admm.Quantize('binary')})
  # A count on the constraint would be overwritten by the target's (or by
  # none): refused, pointing to targets.
  with pytest.raises(ValueError, match='carries a keep count.*KeepRatio'):
    tf_admm.attach_admm(model, constraint={
        'dense': tf_admm.Quantize('binary', keep=10)})
  with pytest.raises(ValueError, match='carries a keep count'):
    tf_admm.attach_admm(model, tf_admm.Sparsity(0.5),
                        constraint=KeepLargest(keep=3))


def test_quantize_constraints_fit_each_kind_of_weight():
  weights = {w.path: w for w in tf_admm.prunable_weights(separable_cnn())}
  levels = tf_admm.Quantize('uniform', bits=3)
  axes = {path: levels.for_weight(weight, None).axis
          for path, weight in weights.items()}
  # Output channels: last for kernels, -2 for a transposed kernel (h, w,
  # filters, inputs); a depthwise kernel has one scale.
  assert axes == {'sep/depthwise_kernel': None, 'sep/pointwise_kernel': -1,
                  'dw/depthwise_kernel': None, 'up/kernel': -2,
                  'fc/kernel': -1}
  assert tf_admm.Quantize('binary', per_channel=False).for_weight(
      weights['fc/kernel'], 7).axis is None
