"""Fixed-point biases against numpy, and units ordered by bias computing the
same."""

import numpy as np
import pytest

from tf_admm import biases
from tf_admm import keras_compat


@pytest.mark.parametrize('bits', [2, 4, 8, 12])
@pytest.mark.parametrize('spread', [1e-3, 0.7, 40.0])
def test_fixed_point_values_match_numpy(bits, spread):
  values = (np.random.default_rng([bits, int(spread * 1000)]).normal(
      size=300) * spread).astype(np.float32)
  rounded = biases.to_fixed_point(values, bits)
  step = biases.fixed_point_step(values, bits)
  largest_code = 2 ** (bits - 1) - 1
  assert np.log2(step) == np.round(np.log2(step))  # a power of two
  # The smallest such power: half of it cannot hold the largest value.
  assert np.abs(values).max() <= largest_code * step
  assert np.abs(values).max() > largest_code * step / 2
  codes = np.round(values.astype(np.float64) / step)
  np.testing.assert_array_equal(rounded, (codes * step).astype(np.float32))
  assert np.abs(codes).max() <= largest_code
  assert np.abs(rounded - values).max() <= step / 2 * (1 + 1e-6)
  # Exact in float32, in at most bits - 1 significant bits: the 23 - (bits
  # - 2) low mantissa bits are 0, and no zero is negative.
  assert np.all(rounded.astype(np.float64) == codes * step)
  low_bits = 23 - (bits - 2)
  assert not np.any(rounded.view(np.uint32) & ((1 << low_bits) - 1))
  assert not np.any(np.signbit(rounded[rounded == 0]))
  # Rounding again changes nothing.
  np.testing.assert_array_equal(biases.to_fixed_point(rounded, bits), rounded)


def test_the_step_is_the_smallest_power_of_two_that_holds_the_largest():
  exact = np.float32(127 * 2.0**-7)  # code 127, the largest of 8 bits
  assert biases.fixed_point_step(np.array([exact, -0.1]), 8) == 2.0**-7
  above = np.nextafter(exact, np.float32(2))
  assert biases.fixed_point_step(np.array([-above]), 8) == 2.0**-6
  # -0.4 steps rounds to zero, a positive one.
  rounded = biases.to_fixed_point(np.array([exact, -0.4 * 2.0**-7]), 8)
  assert rounded[1] == 0 and not np.signbit(rounded[1])


def test_zero_values_stay_zero():
  assert biases.fixed_point_step(np.zeros(5), 8) == 0.0
  np.testing.assert_array_equal(biases.to_fixed_point(np.zeros(5), 8),
                                np.zeros(5))


@pytest.mark.parametrize('bits', [0, 1, 17, 2.5, '8'])
def test_bad_bits_are_refused(bits):
  with pytest.raises(ValueError, match='Bias bits must be an integer from 2 '
                     'to 16'):
    biases.check_bits(bits)
  with pytest.raises(ValueError, match='Bias bits'):
    biases.round_biases(None, bits)


def _model(keras, seed=0):
  """A small CNN: conv (bias) -> conv (no bias) -> dense a -> dense b ->
  softmax output, with random biases."""
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((8, 8, 2)),
      keras.layers.Conv2D(4, 3, activation='relu', name='conv'),
      keras.layers.Conv2D(3, 3, use_bias=False, name='plain'),
      keras.layers.Flatten(name='flatten'),
      keras.layers.Dense(12, activation='relu', name='a'),
      keras.layers.Dense(7, activation='tanh', name='b'),
      keras.layers.Dense(5, activation='softmax', name='out'),
  ])
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if getattr(layer, 'bias', None) is not None:
      layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))
  return model


@pytest.mark.parametrize('keras_version', [2, 3])
def test_round_biases_rounds_each_layer_on_its_own_grid(keras_version):
  keras = keras_compat.keras_module(keras_version)
  model = _model(keras)
  before = {layer.name: [w.numpy() for w in layer.weights]
            for layer in model.layers}
  steps = biases.round_biases(model, 6)
  assert set(steps) == {'conv', 'a', 'b', 'out'}
  for layer in model.layers:
    original = before[layer.name]
    if layer.name in steps:
      expected = biases.to_fixed_point(original[1], 6)
      np.testing.assert_array_equal(layer.bias.numpy(), expected)
      assert steps[layer.name] == biases.fixed_point_step(original[1], 6)
      np.testing.assert_array_equal(layer.kernel.numpy(), original[0])
    else:
      for weight, value in zip(layer.weights, original):
        np.testing.assert_array_equal(weight.numpy(), value)


@pytest.mark.parametrize('keras_version', [2, 3])
def test_round_biases_reaches_nested_models(keras_version):
  keras = keras_compat.keras_module(keras_version)
  inner = _model(keras)
  inputs = keras.Input((8, 8, 2))
  outer = keras.Model(inputs, keras.layers.Dense(3, name='head')(
      inner(inputs)))
  # The head's bias stays all zero: it has no grid and is left alone.
  steps = biases.round_biases(outer, 8)
  assert set(steps) == {f'{inner.name}/{name}' for name in
                        ('conv', 'a', 'b', 'out')}
  for name in ('conv', 'a', 'b', 'out'):
    bias = inner.get_layer(name).bias.numpy()
    np.testing.assert_array_equal(bias, biases.to_fixed_point(bias, 8))


@pytest.mark.parametrize('keras_version', [2, 3])
def test_a_dense_layer_that_is_also_an_output_keeps_its_order(
    keras_version):
  keras = keras_compat.keras_module(keras_version)
  inputs = keras.Input((4,))
  hidden = keras.layers.Dense(6, name='hidden')(inputs)
  model = keras.Model(inputs, [hidden, keras.layers.Dense(2, name='out')(
      hidden)])
  model.get_layer('hidden').bias.assign(np.arange(6.0, 0.0, -1.0))
  ordered = biases.units_sorted_by_bias(model)
  np.testing.assert_array_equal(ordered.get_layer('hidden').bias.numpy(),
                                np.arange(6.0, 0.0, -1.0))


@pytest.mark.parametrize('keras_version', [2, 3])
def test_units_sorted_by_bias_compute_the_same(keras_version):
  keras = keras_compat.keras_module(keras_version)
  model = _model(keras)
  x = np.random.default_rng(1).normal(size=(16, 8, 8, 2)).astype(np.float32)
  expected = model(x).numpy()
  original = {layer.name: [w.numpy() for w in layer.weights]
              for layer in model.layers}
  ordered = biases.units_sorted_by_bias(model)
  np.testing.assert_allclose(ordered(x).numpy(), expected, rtol=1e-5,
                             atol=1e-6)
  # a and b feed Dense layers: their units (kernel columns, biases) go in
  # order of bias, and the next kernel's rows follow.
  order_a = np.argsort(original['a'][1])
  order_b = np.argsort(original['b'][1])
  for name, kernel in (('a', original['a'][0][:, order_a]),
                       ('b', original['b'][0][order_a][:, order_b]),
                       ('out', original['out'][0][order_b])):
    np.testing.assert_array_equal(ordered.get_layer(name).kernel.numpy(),
                                  kernel)
  for name, order in (('a', order_a), ('b', order_b)):
    np.testing.assert_array_equal(ordered.get_layer(name).bias.numpy(),
                                  original[name][1][order])
  # The output layer's units keep their order (they are the classes), and
  # the model passed in is left as it was.
  np.testing.assert_array_equal(ordered.get_layer('out').bias.numpy(),
                                original['out'][1])
  for layer in model.layers:
    for weight, value in zip(layer.weights, original[layer.name]):
      np.testing.assert_array_equal(weight.numpy(), value)
