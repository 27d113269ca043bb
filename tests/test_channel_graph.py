"""The channel graph: tied channels, pinned channels and MAC counts against
hand counts, on both Kerases."""

import numpy as np
import pytest
import tensorflow as tf

from tf_admm import channel_graph
from tf_admm import channel_handlers
from tf_admm import macs


def residual_model(keras):
  """(8, 8, 3) -> a (8, 8, 4) -> [b -> bn] + a -> [c] + . -> d (2)
  -> concat (6) -> flatten (384) -> out (3)."""
  layers = keras.layers
  inputs = keras.Input((8, 8, 3))
  a = layers.Conv2D(4, 3, padding='same', name='a')(inputs)
  b = layers.BatchNormalization(name='bn')(layers.Conv2D(4, 1, name='b')(a))
  stream = layers.Add(name='add')([a, b])
  stream = layers.Add(name='add2')([stream, layers.Conv2D(4, 1,
                                                          name='c')(stream)])
  d = layers.Conv2D(2, 1, name='d')(stream)
  x = layers.Flatten(name='flat')(layers.Concatenate(name='cat')([stream, d]))
  return keras.Model(inputs, layers.Dense(3, name='out')(x))


def test_adds_tie_every_producer_of_a_stream(any_keras):
  graph = channel_graph.ChannelGraph(residual_model(any_keras))
  groups = {g.producers: g for g in graph.groups}
  assert set(groups) == {('a', 'b', 'c'), ('d',), ('out',)}
  stream = groups[('a', 'b', 'c')]
  assert stream.width == 4 and not stream.pinned.any()
  for path in ('a', 'b', 'c'):
    np.testing.assert_array_equal(stream.index[path], np.arange(4))
  # The model's output channels can never go.
  assert groups[('out',)].pinned.all()


def test_macs_equal_a_hand_count_through_add_and_concatenate(any_keras):
  counted = macs.model_macs(residual_model(any_keras))
  want = {
      'a': 8 * 8 * (3 * 3 * 3) * 4,  # positions x kernel x filters
      'b': 8 * 8 * 4 * 4,
      'c': 8 * 8 * 4 * 4,
      'd': 8 * 8 * 4 * 2,
      'out': 8 * 8 * 6 * 3,  # the flattened concatenation, 384 features
  }
  assert counted == {'total': sum(want.values()), 'layers': want}


def test_nested_models_are_one_graph(any_keras):
  layers = any_keras.layers
  inner = any_keras.Sequential([any_keras.Input((4,)),
                                layers.Dense(3, name='d')], name='inner')
  inputs = any_keras.Input((4,))
  x = layers.Add(name='add')([inner(inputs), layers.Dense(3, name='e')(
      inputs)])
  graph = channel_graph.ChannelGraph(
      any_keras.Model(inputs, layers.Dense(2, name='out')(x)))
  assert [c.path for c in graph.calls] == ['inner/d', 'e', 'add', 'out']
  assert ('inner/d', 'e') in {g.producers for g in graph.groups}


def test_layers_that_read_every_channel_pin_what_they_read(any_keras):
  layers = any_keras.layers
  inputs = any_keras.Input((5, 4))
  x = layers.Dense(6, name='a')(inputs)
  x = layers.LSTM(3, return_sequences=True, name='lstm')(x)
  x = layers.Dense(6, activation='softmax', name='b')(x)
  x = layers.Dense(4, name='c')(x)
  x = layers.Softmax(name='soft')(x)
  graph = channel_graph.ChannelGraph(
      any_keras.Model(inputs, layers.Dense(2, name='out')(x)))
  pinned = {g.producers[0]: g.pinned.all() for g in graph.groups}
  assert pinned == {'a': True, 'b': True, 'c': True, 'out': True}
  assert graph.call('lstm').kind == channel_handlers.OPAQUE


def test_a_registered_handler_makes_a_user_layer_cuttable(any_keras):

  class Gate(any_keras.layers.Layer):
    """A user's channel-wise layer: a sigmoid gate per channel."""

    def call(self, inputs):
      return inputs * tf.sigmoid(inputs)

  layers = any_keras.layers
  inputs = any_keras.Input((4,))
  x = Gate(name='gate')(layers.Dense(5, name='a')(inputs))
  model = any_keras.Model(inputs, layers.Dense(2, name='out')(x))
  assert channel_graph.ChannelGraph(model).group_of('a').pinned.all()
  channel_handlers.register_channel_handler(Gate,
                                            channel_handlers.Channelwise())
  try:
    assert not channel_graph.ChannelGraph(model).group_of(
        'a').pinned.any()
  finally:
    del channel_handlers.HANDLERS[Gate]


def test_group_keep_sums_scores_and_keeps_pinned_channels():
  group = channel_graph.ChannelGroup(
      producers=('a', 'b'), index={'a': np.arange(3),
                                   'b': np.array([2, 1, 0])},
      pinned=np.array([False, False, True]))
  # Summed: channel 0: 1 + 0 = 1; channel 1: 2 + 0.5; channel 2 pinned.
  kept = group.keep({'a': np.array([1.0, 2.0, 0.0]),
                     'b': np.array([9.0, 0.5, 0.0])}, 2)
  np.testing.assert_array_equal(kept, [False, True, True])
  with pytest.raises(TypeError):
    channel_handlers.register_channel_handler('Gate', None)


def test_inputs_of_unknown_length_are_kept_whole(any_keras):
  layers = any_keras.layers
  inputs = any_keras.Input((None,), dtype='int32')
  x = layers.LSTM(8, name='lstm')(layers.Embedding(50, 8, name='emb')(inputs))
  x = layers.Dense(6, name='a')(x)
  model = any_keras.Model(inputs, layers.Dense(3, name='b')(x))
  graph = channel_graph.ChannelGraph(model)
  assert graph.call('emb').kind == channel_handlers.OPAQUE
  assert not graph.group_of('a').pinned.any()  # after the LSTM, known
  assert macs.model_macs(model)['layers'] == {'a': 8 * 6, 'b': 6 * 3}
