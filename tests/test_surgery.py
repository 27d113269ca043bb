"""Channel surgery: the small model computes what the masked one does."""

import numpy as np
import pytest

import tf_admm
from tf_admm import models
from tf_admm import progressive
from tf_admm import surgery
from tf_admm.keras_compat import keras

layers = keras.layers


def randomize(model, seed=0):
  """Random weights everywhere, biases and normalization included (nonzero
  biases make pruned channels nonzero constants)."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      randomize(layer, seed + 1)
      continue
    weights = layer.get_weights()
    if isinstance(layer, layers.BatchNormalization):
      # gamma, beta, moving mean: any sign; moving variance: positive.
      weights = [rng.normal(size=w.shape) for w in weights[:3]] + [
          rng.uniform(0.5, 2.0, size=weights[3].shape)]
    else:
      weights = [0.3 * rng.normal(size=w.shape) for w in weights]
    layer.set_weights([w.astype(np.float32) for w in weights])


def zero_channels(model, channels):
  """Zeroes the kernel slices of {layer name: output channels}."""
  for name, dropped in channels.items():
    layer = model.get_layer(name)
    weights = layer.get_weights()
    weights[0][..., dropped] = 0
    layer.set_weights(weights)


def check_same_outputs(model, small, seed=0):
  x = np.random.default_rng(seed).normal(
      size=(16,) + tuple(model.input_shape[1:])).astype(np.float32)
  expected = model(x).numpy()
  np.testing.assert_allclose(small(x).numpy(), expected, rtol=1e-4,
                             atol=1e-4 * np.abs(expected).max())


def kernel_shape(model, name):
  return tuple(model.get_layer(name).kernel.shape)


def test_lenet5_loses_the_zeroed_channels_and_their_inputs():
  model = models.lenet5()
  randomize(model)
  zero_channels(model, {'conv1': [0, 3, 7], 'conv2': list(range(0, 50, 2)),
                        'fc1': list(range(100, 500))})
  small, widths = surgery.remove_channels(model)
  assert widths == {'conv1': (20, 17), 'conv2': (50, 25), 'fc1': (500, 100),
                    'fc2': (10, 10)}
  assert kernel_shape(small, 'conv2') == (5, 5, 17, 25)
  # Flatten's channels-last layout: 4 x 4 positions of 25 channels.
  assert kernel_shape(small, 'fc1') == (4 * 4 * 25, 100)
  assert kernel_shape(small, 'fc2') == (100, 10)
  # The removed channels were relu(bias) constants, folded into the biases.
  assert not np.allclose(small.get_layer('fc2').bias.numpy(),
                         model.get_layer('fc2').bias.numpy())
  check_same_outputs(model, small)


def test_batch_normalization_pooling_and_dropout_follow_their_channels():
  inputs = keras.Input((12, 12, 3))
  x = layers.Conv2D(8, 3, name='conv')(inputs)
  x = layers.BatchNormalization(name='bn')(x)
  x = layers.ReLU(name='relu')(x)
  x = layers.AveragePooling2D(name='pool')(x)
  x = layers.Dropout(0.5, name='drop')(x)
  x = layers.DepthwiseConv2D(3, name='dw')(x)
  x = layers.GlobalMaxPooling2D(name='gmp')(x)
  outputs = layers.Dense(4, name='out')(x)
  model = keras.Model(inputs, outputs)
  randomize(model)
  zero_channels(model, {'conv': [1, 2, 6]})
  small, widths = surgery.remove_channels(model)
  assert widths['conv'] == (8, 5)
  assert small.get_layer('bn').gamma.shape == (5,)
  assert small.get_layer('dw').depthwise_kernel.shape == (3, 3, 5, 1)
  assert kernel_shape(small, 'out') == (5, 4)
  check_same_outputs(model, small)


def residual_model():
  """conv a -> (conv b) + a -> conv c -> flatten -> dense: `a` and `b`
  are tied by the Add."""
  inputs = keras.Input((10, 10, 2))
  a = layers.Conv2D(6, 3, activation='relu', name='a')(inputs)
  b = layers.Conv2D(6, 1, name='b')(a)
  x = layers.Add(name='add')([a, b])
  x = layers.Conv2D(4, 3, name='c')(x)
  x = layers.Flatten(name='flat')(x)
  outputs = layers.Dense(3, name='out')(x)
  model = keras.Model(inputs, outputs)
  randomize(model)
  return model


def test_a_channel_tied_across_add_goes_from_both_branches_or_neither():
  model = residual_model()
  # Channel 1 pruned on both branches, 4 on one only: 1 goes, 4 stays.
  zero_channels(model, {'a': [1, 4], 'b': [1]})
  small, widths = surgery.remove_channels(model)
  assert widths['a'] == (6, 5) and widths['b'] == (6, 5)
  assert kernel_shape(small, 'b') == (1, 1, 5, 5)
  assert kernel_shape(small, 'c') == (3, 3, 5, 4)
  check_same_outputs(model, small)


def test_concatenated_channels_are_cut_in_their_slice():
  inputs = keras.Input((8, 8, 2))
  a = layers.Conv2D(4, 3, name='a')(inputs)
  b = layers.Conv2D(5, 3, name='b')(inputs)
  x = layers.Concatenate(name='cat')([a, b])
  x = layers.Conv2D(3, 3, name='c')(x)
  outputs = layers.Dense(2, name='out')(layers.GlobalAveragePooling2D()(x))
  model = keras.Model(inputs, outputs)
  randomize(model)
  zero_channels(model, {'a': [0], 'b': [2, 4]})
  small, widths = surgery.remove_channels(model)
  assert widths['a'] == (4, 3) and widths['b'] == (5, 3)
  assert kernel_shape(small, 'c') == (3, 3, 6, 3)
  check_same_outputs(model, small)


def test_a_nonzero_constant_read_through_zero_padding_stays():
  """Zero padding makes a constant channel's contribution differ at the
  borders: it cannot be folded into a bias, so the channel stays; a zero
  constant (no bias) goes."""
  inputs = keras.Input((8, 8, 1))
  x = layers.Conv2D(4, 3, activation='relu', name='a')(inputs)
  x = layers.Conv2D(3, 3, padding='same', name='b')(x)
  outputs = layers.Dense(2, name='out')(layers.Flatten()(x))
  model = keras.Model(inputs, outputs)
  randomize(model)
  kernel, bias = model.get_layer('a').get_weights()
  bias[[0, 1]] = [1.0, 0.0]  # relu(1) = 1 and relu(0) = 0
  model.get_layer('a').set_weights([kernel, bias])
  zero_channels(model, {'a': [0, 1]})
  small, widths = surgery.remove_channels(model)
  assert widths['a'] == (4, 3)  # channel 0 stays, channel 1 goes
  check_same_outputs(model, small)


def test_every_layer_keeps_a_channel_and_the_outputs_stay():
  model = models.lenet300_100()
  randomize(model)
  zero_channels(model, {'fc2': list(range(100)), 'fc3': [0, 1]})
  small, widths = surgery.remove_channels(model)
  assert widths['fc2'] == (100, 1)
  assert widths['fc3'] == (10, 10)  # the model's outputs
  check_same_outputs(model, small)


def test_a_model_without_pruned_channels_comes_back_the_same():
  model = models.lenet5()
  randomize(model)
  small, widths = surgery.remove_channels(model)
  assert all(before == after for before, after in widths.values())
  for a, b in zip(model.get_weights(), small.get_weights()):
    np.testing.assert_array_equal(a, b)


def nested_model():
  inner = keras.Sequential([keras.Input((4,)), layers.Dense(3, name='d')],
                           name='inner')
  inputs = keras.Input((4,))
  return keras.Model(inputs, layers.Dense(2, name='out')(inner(inputs)))


def shared_model():
  shared = layers.Dense(4, name='shared')
  inputs = keras.Input((4,))
  return keras.Model(inputs, layers.Dense(2, name='out')(
      shared(shared(inputs))))


def reshaped_model():
  return keras.Sequential([keras.Input((2, 4)), layers.Dense(4, name='a'),
                           layers.Reshape((8,), name='r'),
                           layers.Dense(2, name='out')])


def other_axis_model():
  return keras.Sequential([
      keras.Input((6, 6, 2)), layers.Conv2D(3, 3, name='a'),
      layers.BatchNormalization(axis=1, name='bn1'), layers.Flatten(),
      layers.Dense(2, name='out')])


def _layer(model, path):
  for name in path.split('/'):
    model = model.get_layer(name)
  return model


@pytest.mark.parametrize('build,path,kernel_after', [
    # A nested model's layers are cut like any other.
    (nested_model, 'inner/d', (4, 2)),
    # What the graph cannot cut stays whole: a layer called twice, a
    # reshape that mixes positions and channels, a normalization over
    # another axis.
    (shared_model, 'shared', (4, 4)),
    (reshaped_model, 'a', (4, 4)),
    (other_axis_model, 'a', (3, 3, 2, 3)),
])
def test_structures_the_graph_cannot_cut_stay_whole_and_the_rest_is_cut(
    build, path, kernel_after):
  model = build()
  randomize(model)
  weights = _layer(model, path).get_weights()
  weights[0][..., 1] = 0
  _layer(model, path).set_weights(weights)
  small, _ = surgery.remove_channels(model)
  assert tuple(_layer(small, path).kernel.shape) == kernel_after
  check_same_outputs(model, small)


def test_inputs_of_unknown_size_are_refused():
  model = keras.Sequential([keras.Input((None, 3)), layers.Dense(2)])
  with pytest.raises(ValueError, match='inputs of known size'):
    surgery.remove_channels(model)


def test_a_progressive_channel_run_refuses_an_uncuttable_target(tmp_path):
  """Before any training: nothing is written."""
  data = progressive.Data(*[np.zeros((4, 4), np.float32),
                            np.zeros(4, int)] * 3)
  with pytest.raises(ValueError, match=r"'fc/kernel'.*could never be cut"):
    progressive.ProgressiveRun(
        lambda: keras.Sequential([keras.Input((4,)),
                                  layers.Dense(8, name='fc'),
                                  layers.Softmax(name='soft'),
                                  layers.Dense(2, name='out')]),
        data, lambda model: {'fc': 0.5},
        progressive.Settings(stage_rates=[2.0], rate_unit='macs'),
        str(tmp_path / 'run'), constraint=tf_admm.KeepChannels())
  assert not (tmp_path / 'run').exists()


def test_silenced_channels_stay_zero_through_training_and_are_cut():
  """Behind BatchNormalization and zero padding, a pruned channel is a
  nonzero constant that must stay; silenced, it outputs 0 through any
  training and is cut."""
  inputs = keras.Input((8, 8, 2))
  x = layers.Conv2D(6, 3, padding='same', name='a')(inputs)
  x = layers.BatchNormalization(name='bn')(x)
  x = layers.ReLU(name='relu')(x)
  x = layers.Conv2D(4, 3, padding='same', name='b')(x)
  outputs = layers.Dense(2, name='out')(layers.GlobalAveragePooling2D()(x))
  model = keras.Model(inputs, outputs)
  randomize(model)
  zero_channels(model, {'a': [1, 4]})
  kept_before = surgery.remove_channels(model)[1]['a'][1]
  assert kept_before == 6  # constants read through zero padding stay

  assert surgery.silence_pruned_channels(model) == {'a': 2}
  model.compile(keras.optimizers.Adam(0.1), 'mse')
  rng = np.random.default_rng(0)
  model.fit(rng.normal(size=(64, 8, 8, 2)), rng.normal(size=(64, 2)),
            epochs=2, verbose=0)
  for variable in (model.get_layer('a').bias, model.get_layer('bn').gamma,
                   model.get_layer('bn').beta):
    assert not np.any(variable.numpy()[[1, 4]]), variable.name
  zero_channels(model, {'a': [1, 4]})  # what the pruning wrapper holds
  small, widths = surgery.remove_channels(model)
  assert widths['a'] == (6, 4)
  check_same_outputs(model, small)


@pytest.mark.parametrize('name', ['vgg_small', 'mobilenet_v2_small'])
def test_deeper_models_lose_half_their_pruned_channels_exactly(name):
  """BatchNormalization, zero padding, depthwise convolutions and residual
  Adds: with the pruned channels silenced, every one of them is cut."""
  model = models.build(name)
  randomize(model)
  rng = np.random.default_rng(0)
  dropped = {}
  for layer in models.CHANNEL_PROFILES[name]:
    width = model.get_layer(layer).kernel.shape[-1]
    dropped[layer] = list(rng.choice(width, width // 2, replace=False))
  zero_channels(model, dropped)
  surgery.silence_pruned_channels(model)
  small, widths = surgery.remove_channels(model)
  for layer, channels in dropped.items():
    before, after = widths[layer]
    assert after == before - len(channels), layer
  check_same_outputs(model, small)


def test_softmax_keeps_every_channel_it_reads():
  """Softmax mixes channels: a constant channel read by it changes the
  others, so it stays (a layer or an activation alike)."""
  inputs = keras.Input((6,))
  x = layers.Dense(5, name='a')(inputs)
  x = layers.Activation('softmax', name='soft')(x)
  x = layers.Dense(4, activation='softmax', name='b')(x)
  outputs = layers.Dense(3, name='out')(x)
  model = keras.Model(inputs, outputs)
  randomize(model)
  zero_channels(model, {'a': [0, 1], 'b': [2]})
  small, widths = surgery.remove_channels(model)
  assert widths['a'] == (5, 5) and widths['b'] == (4, 4)
  check_same_outputs(model, small)
