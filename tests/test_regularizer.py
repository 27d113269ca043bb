import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tf_admm
from tests.conftest import random_batch, small_model


def _set_state(regularizer, shape, seed):
  rng = np.random.default_rng(seed)
  z, u = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
  regularizer.z.assign(z)
  regularizer.u.assign(u)
  return z, u


@pytest.mark.parametrize('shape', [(5,), (5, 5, 1, 20), (30, 7)])
@pytest.mark.parametrize('rho', [1e-4, 3e-3, 2.0])
def test_penalty_and_gradient_match_numpy(shape, rho):
  weight = tf.Variable(np.random.default_rng(0).normal(size=shape)
                       .astype(np.float32))
  regularizer = tf_admm.AdmmRegularizer(rho)
  regularizer.build(weight)
  z, u = _set_state(regularizer, shape, seed=1)
  with tf.GradientTape() as tape:
    penalty = regularizer(weight)
  w = weight.numpy().astype(np.float64)
  np.testing.assert_allclose(penalty.numpy(),
                             rho / 2 * np.sum((w - z + u)**2), rtol=1e-5)
  np.testing.assert_allclose(tape.gradient(penalty, weight).numpy(),
                             rho * (w - z + u), rtol=1e-5, atol=1e-7)


def test_base_regularizer_is_added():
  weight = tf.Variable(np.ones((3, 2), np.float32))
  regularizer = tf_admm.AdmmRegularizer(0.5, base=keras.regularizers.L2(0.1))
  assert float(regularizer(weight)) == pytest.approx(0.5 / 2 * 6 + 0.1 * 6)


def test_rho_must_be_positive():
  with pytest.raises(ValueError, match='rho'):
    tf_admm.AdmmRegularizer(0.0)


def test_config_round_trip():
  regularizer = tf_admm.AdmmRegularizer(0.02, base='l2')
  clone = tf_admm.AdmmRegularizer.from_config(regularizer.get_config())
  assert clone.get_config() == regularizer.get_config()
  restored = keras.regularizers.deserialize(
      keras.regularizers.serialize(regularizer))
  assert isinstance(restored, tf_admm.AdmmRegularizer)


def test_attach_and_remove_keep_weights_and_structure():
  model = small_model()
  admm = tf_admm.attach_admm(model, ['dense'], rho=0.1)
  assert [l.name for l, _ in tf_admm.admm_layers(admm)] == ['dense']
  assert len(admm.losses) == 1
  for got, want in zip(admm.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(got, want)
  plain = tf_admm.remove_admm(admm)
  assert not tf_admm.admm_layers(plain) and not plain.losses
  for got, want in zip(plain.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(got, want)


def test_attach_to_unbuilt_model_builds_state_on_first_use():
  model = keras.Sequential([keras.layers.Dense(3, name='d')])
  admm = tf_admm.attach_admm(model, ['d'])
  admm(np.zeros((1, 4), np.float32))
  (layer, regularizer), = tf_admm.admm_layers(admm)
  assert admm.losses and regularizer.z.shape == layer.kernel.shape


def test_attach_rejects_bad_input():
  model = small_model()
  with pytest.raises(ValueError, match="'nope' is not a prunable layer"):
    tf_admm.attach_admm(model, ['nope'])
  with pytest.raises(ValueError, match='shape'):
    tf_admm.attach_admm(model, ['dense'], masks={'dense': np.ones((2, 2))})
  with pytest.raises(ValueError, match='already under ADMM'):
    tf_admm.attach_admm(tf_admm.attach_admm(model, ['dense']), ['dense'])

  class Subclassed(keras.Model):

    def call(self, x):
      return x

  with pytest.raises(ValueError, match='subclassed'):
    tf_admm.attach_admm(Subclassed(), ['dense'])


def test_model_with_regularizers_saves_and_loads(tmp_path):
  model = tf_admm.attach_admm(small_model(), ['conv', 'dense'], rho=0.05)
  x, _ = random_batch()
  for name in ('model.keras', 'model.h5'):
    model.save(tmp_path / name)
    loaded = keras.models.load_model(tmp_path / name)
    pairs = tf_admm.admm_layers(loaded)
    assert [l.name for l, _ in pairs] == ['conv', 'dense']
    assert pairs[0][1].get_config()['rho'] == pytest.approx(0.05)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


def test_admm_state_survives_checkpoint_round_trip(tmp_path):
  model = tf_admm.attach_admm(small_model(), ['conv', 'dense'])
  states = {}
  for layer, regularizer in tf_admm.admm_layers(model):
    states[layer.name] = _set_state(regularizer, layer.kernel.shape, seed=3)
    regularizer.rho.assign(0.7)
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / 'ckpt'))

  fresh = tf_admm.attach_admm(small_model(seed=1), ['conv', 'dense'])
  tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
  for layer, regularizer in tf_admm.admm_layers(fresh):
    np.testing.assert_array_equal(regularizer.z.numpy(), states[layer.name][0])
    np.testing.assert_array_equal(regularizer.u.numpy(), states[layer.name][1])
    assert float(regularizer.rho) == pytest.approx(0.7)


def test_functional_model_round_trip():
  inputs = keras.Input((6, 6, 1))
  hidden = keras.layers.Conv2D(4, 3, name='conv',
                               kernel_regularizer='l2')(inputs)
  outputs = keras.layers.Dense(3, name='dense')(keras.layers.Flatten()(hidden))
  model = keras.Model(inputs, outputs)
  admm = tf_admm.attach_admm(model, ['conv', 'dense'], rho=0.1)
  conv_regularizer = admm.get_layer('conv').kernel_regularizer
  assert isinstance(conv_regularizer.base, keras.regularizers.L2)
  plain = tf_admm.remove_admm(admm)
  assert isinstance(plain.get_layer('conv').kernel_regularizer,
                    keras.regularizers.L2)
  assert plain.get_layer('dense').kernel_regularizer is None
  x, _ = random_batch(4)
  np.testing.assert_allclose(plain.predict(x, verbose=0),
                             model.predict(x, verbose=0), rtol=1e-6)
