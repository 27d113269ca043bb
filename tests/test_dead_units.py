"""Dead and unused units go without changing the model's outputs."""

import numpy as np
import pytest

from tf_admm import dead_units
from tf_admm import keras_compat
from tf_admm.keras_compat import keras


def sparse_mlp(activation, seed=0):
  """Input 12 -> a (10) -> b (8) -> out (3), kernels ~85% zero, with units
  of `a` and `b` that have no input and units that nothing reads."""
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((12,)),
      keras.layers.Dense(10, activation=activation, name='a'),
      keras.layers.Dense(8, activation=activation, name='b'),
      keras.layers.Dense(3, name='out'),
  ])
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    kernel, bias = layer.get_weights()
    kernel = kernel * (rng.random(kernel.shape) < 0.4)
    layer.set_weights([kernel, rng.normal(size=bias.shape).astype(np.float32)])
  a, b = model.get_layer('a'), model.get_layer('b')
  for layer, column in ((a, 0), (a, 3), (b, 2)):  # no incoming weight
    kernel, bias = layer.get_weights()
    kernel[:, column] = 0
    layer.set_weights([kernel, bias])
  kernel, bias = b.get_weights()
  kernel[5] = 0  # unit 5 of `a`: nothing reads it
  b.set_weights([kernel, bias])
  return model


@pytest.mark.parametrize('activation', ['relu', 'tanh', 'sigmoid', None])
def test_outputs_are_unchanged_and_the_units_are_zeroed(activation):
  model = sparse_mlp(activation)
  x = np.random.default_rng(1).normal(size=(64, 12)).astype(np.float32)
  before = model(x).numpy()
  nonzeros = sum(np.count_nonzero(l.get_weights()[0]) for l in model.layers)
  removed = dead_units.remove_dead_units(model)
  np.testing.assert_allclose(model(x).numpy(), before, rtol=1e-5, atol=1e-5)
  assert set(removed) == {'a', 'b'}
  a_kernel, a_bias = model.get_layer('a').get_weights()
  b_kernel, b_bias = model.get_layer('b').get_weights()
  for unit in (0, 3):
    assert a_bias[unit] == 0 and not b_kernel[unit].any()
  assert not a_kernel[:, 5].any() and a_bias[5] == 0
  assert removed['a']['dead'] >= 2 and removed['a']['unused'] >= 1
  after = sum(np.count_nonzero(l.get_weights()[0]) for l in model.layers)
  assert nonzeros - after == sum(r['weights_zeroed'] for r in removed.values())
  assert after < nonzeros


def test_layers_read_twice_or_by_other_layers_are_left_alone():
  inputs = keras.Input((6,))
  shared = keras.layers.Dense(4, name='shared')(inputs)
  left = keras.layers.Dense(2, name='left')(shared)
  right = keras.layers.Dense(2, name='right')(shared)
  soft = keras.layers.Dense(3, activation='softmax', name='soft')(inputs)
  after_soft = keras.layers.Dense(2, name='after_soft')(soft)
  model = keras.Model(inputs, [left, right, after_soft])
  for name in ('shared', 'soft'):
    kernel, bias = model.get_layer(name).get_weights()
    model.get_layer(name).set_weights([kernel * 0, bias + 1])
  weights = [w.copy() for w in model.get_weights()]
  assert dead_units.remove_dead_units(model) == {}
  for got, want in zip(model.get_weights(), weights):
    np.testing.assert_array_equal(got, want)


def test_cut_out_drops_the_zeroed_units_and_computes_the_same():
  model = sparse_mlp('relu')
  x = np.random.default_rng(1).normal(size=(64, 12)).astype(np.float32)
  before = model(x).numpy()
  dead_units.remove_dead_units(model)
  live = {name: int(model.get_layer(name).kernel.numpy().any(axis=0).sum())
          for name in ('a', 'b')}
  small, cut = dead_units.cut_out(model, x)
  assert cut == {name: (model.get_layer(name).units, live[name])
                 for name in ('a', 'b')}
  assert live['a'] <= 7 and live['b'] <= 7
  for name in ('a', 'b'):
    kernel = small.get_layer(name).kernel.numpy()
    assert kernel.shape[1] == live[name] and kernel.any(axis=0).all()
  np.testing.assert_allclose(small(x).numpy(), before, rtol=1e-5, atol=1e-5)


def test_cut_out_returns_models_it_cannot_cut_as_they_are(any_keras):
  full = any_keras.Sequential([any_keras.Input((4,)),
                               any_keras.layers.Dense(3),
                               any_keras.layers.Dense(2)])
  x = np.ones((2, 4), np.float32)
  assert dead_units.cut_out(full, x) == (full, {})
  unknown = any_keras.Sequential([any_keras.Input((None, 4)),
                                  any_keras.layers.Dense(3, name='a'),
                                  any_keras.layers.Dense(2)])
  unknown.get_layer('a').kernel.assign(np.zeros((4, 3), np.float32))
  assert dead_units.cut_out(unknown, x[:, None]) == (unknown, {})


def test_cut_out_cuts_keras3_models_too():
  keras3 = keras_compat.keras3
  keras3.utils.set_random_seed(0)
  model = keras3.Sequential([keras3.Input((4,)),
                             keras3.layers.Dense(3, name='a'),
                             keras3.layers.Dense(2, name='b')])
  kernel = model.get_layer('a').kernel.numpy()
  kernel[:, 1] = 0
  model.get_layer('a').kernel.assign(kernel)
  x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
  small, cut = dead_units.cut_out(model, x)
  assert cut == {'a': (3, 2)}
  np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-6)
