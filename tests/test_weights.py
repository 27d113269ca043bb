"""Which weights tf_admm prunes: paths, input axes, refusals, the rest."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

import tf_admm
from tf_admm import keras_compat
from tf_admm import weights as weights_lib
from tests.conftest import nested_model, separable_cnn, small_model
from tests.conftest import token_model

L = keras.layers


def _summary(model):
  return [(w.path, type(w.layer).__name__, w.kind.attribute, w.shape,
           w.kind.input_axis) for w in tf_admm.prunable_weights(model)]


def test_every_kind_in_a_functional_cnn():
  model = separable_cnn()
  assert _summary(model) == [
      ('sep/depthwise_kernel', 'SeparableConv2D', 'depthwise_kernel',
       (3, 3, 3, 1), None),
      ('sep/pointwise_kernel', 'SeparableConv2D', 'pointwise_kernel',
       (1, 1, 3, 8), -2),
      ('dw/depthwise_kernel', 'DepthwiseConv2D', 'depthwise_kernel',
       (3, 3, 8, 2), None),
      # A transposed kernel is (h, w, filters, input channels).
      ('up/kernel', 'Conv2DTranspose', 'kernel', (3, 3, 5, 16), -1),
      ('fc/kernel', 'Dense', 'kernel', (8 * 8 * 5, 3), 0),
  ]
  # Each names the layer's own variable, and sizes are the variables' sizes.
  for weight in tf_admm.prunable_weights(model):
    layer = model.get_layer(weight.path.split('/')[0])
    assert weight.layer is layer
    assert weight.variable is getattr(layer, weight.kind.attribute)
    assert weight.size == weight.variable.numpy().size


def test_input_axis_is_the_axis_a_layer_sums_over():
  model = separable_cnn()
  x = np.random.default_rng(0).normal(size=(2, 10, 10, 3)).astype(np.float32)
  for weight in tf_admm.prunable_weights(model):
    axis = weight.kind.input_axis
    if axis is None:
      continue
    # Zeroing one slice of the input axis equals zeroing that input channel
    # of the layer: the output is unchanged when that input is zero anyway.
    if weight.kind.attribute == 'pointwise_kernel':
      continue  # its input is internal to the layer
    layer = weight.layer
    layer_in = keras.Model(model.inputs, layer.input)(x).numpy()
    assert weight.shape[axis] == layer_in.shape[-1]
    layer_in[..., 0] = 0.0
    before = layer(layer_in).numpy()
    kept = weight.variable.numpy()
    cut = kept.copy()
    np.moveaxis(cut, axis, 0)[0] = 0.0
    weight.variable.assign(cut)
    after = layer(layer_in).numpy()
    weight.variable.assign(kept)
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_embedding_model():
  assert _summary(token_model()) == [
      ('emb/embeddings', 'Embedding', 'embeddings', (50, 8), None),
      ('c1/kernel', 'Conv1D', 'kernel', (3, 8, 8), -2),
      ('fc/kernel', 'Dense', 'kernel', (8, 3), 0),
  ]


def test_other_conv_kinds():
  model = keras.Sequential([
      keras.Input((6, 6, 6, 2)),
      L.Conv3D(3, 2, name='c3'),
      L.Conv3DTranspose(4, 2, name='t3'),
      L.Reshape((6 * 6 * 6, 4), name='flat'),
      L.DepthwiseConv1D(3, name='dw1'),
      L.SeparableConv1D(5, 3, name='sep1'),
  ])
  assert _summary(model) == [
      ('c3/kernel', 'Conv3D', 'kernel', (2, 2, 2, 2, 3), -2),
      ('t3/kernel', 'Conv3DTranspose', 'kernel', (2, 2, 2, 4, 3), -1),
      ('dw1/depthwise_kernel', 'DepthwiseConv1D', 'depthwise_kernel',
       (3, 4, 1), None),
      ('sep1/depthwise_kernel', 'SeparableConv1D', 'depthwise_kernel',
       (3, 4, 1), None),
      ('sep1/pointwise_kernel', 'SeparableConv1D', 'pointwise_kernel',
       (1, 4, 5), -2),
  ]


def test_nested_sequential_paths():
  model = nested_model()
  assert [(p, s) for p, _, _, s, _ in _summary(model)] == [
      ('block/ic/kernel', (3, 3, 1, 4)),
      ('block/id/kernel', (64, 8)),
      ('out/kernel', (8, 3)),
  ]
  inner = model.get_layer('block')
  weights = tf_admm.prunable_weights(model)
  assert weights[0].variable is inner.get_layer('ic').kernel
  assert weights[1].variable is inner.get_layer('id').kernel
  assert weights[2].variable is model.get_layer('out').kernel


def test_a_subclass_of_a_prunable_class_is_not_prunable():

  class MyDense(L.Dense):
    pass

  model = keras.Sequential([keras.Input((3,)), MyDense(2, name='mine'),
                            L.Dense(2, name='plain')])
  assert [w.path for w in tf_admm.prunable_weights(model)] == ['plain/kernel']


class _Subclassed(keras.Model):

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.dense = L.Dense(3, name='inner_dense')

  def call(self, inputs):
    return self.dense(inputs)


def test_subclassed_model_is_refused():
  model = _Subclassed(name='sub')
  model(np.zeros((1, 4), np.float32))
  assert model.built
  with pytest.raises(ValueError, match="'sub' is a subclassed"):
    tf_admm.prunable_weights(model)
  with pytest.raises(ValueError, match='subclassed'):
    tf_admm.attach_admm(model, tf_admm.CompressionRate(2))


def test_subclassed_model_nested_in_a_functional_model_is_refused():
  inputs = keras.Input((4,))
  outputs = L.Dense(2, name='head')(_Subclassed(name='sub')(inputs))
  model = keras.Model(inputs, outputs, name='outer')
  with pytest.raises(ValueError, match="'sub' is a subclassed"):
    tf_admm.prunable_weights(model)
  with pytest.raises(ValueError, match='subclassed'):
    weights_lib.unpruned_weights(model, [])


def test_unbuilt_model_is_refused():
  model = keras.Sequential([L.Dense(3)], name='lazy')
  assert not model.built
  with pytest.raises(ValueError, match="'lazy' is not built"):
    tf_admm.prunable_weights(model)
  model.build((None, 5))
  assert [w.shape for w in tf_admm.prunable_weights(model)] == [(5, 3)]


def test_model_without_prunable_weights_is_refused():
  model = keras.Sequential([keras.Input((4,)), L.BatchNormalization(),
                            L.Activation('relu')], name='plain')
  with pytest.raises(ValueError, match="'plain' has no prunable weight"):
    tf_admm.prunable_weights(model)
  with pytest.raises(ValueError, match='no prunable weight'):
    tf_admm.attach_admm(model, tf_admm.CompressionRate(2))
  assert tf_admm.prunable_weights(model, require=False) == []


def test_not_a_model_is_refused():
  with pytest.raises(TypeError, match='Expected a Keras model'):
    tf_admm.prunable_weights(L.Dense(3))


# Loads an H5 and a .keras file without tf_admm, then imports it and fits
# the .keras model under ADMM; prints what each step said, as JSON.
_LOAD_WITHOUT_TF_ADMM = """
import json, sys
import numpy as np
import tf_keras
h5, dot_keras = sys.argv[1:]
try:
  tf_keras.models.load_model(h5)
except TypeError as error:
  h5_error = str(error)
model = tf_keras.models.load_model(dot_keras)
regularizer = model.get_layer('conv').kernel_regularizer
import tf_admm
model.compile('sgd', 'mse')
before = model.get_weights()
try:
  model.fit(np.ones((8, 6, 6, 1)), np.ones((8, 3)), verbose=0,
            callbacks=[tf_admm.AdmmCallback(tf_admm.Stages())])
except ValueError as error:
  fit_error = str(error)
unchanged = all(np.array_equal(a, b) for a, b in zip(model.get_weights(),
                                                      before))
print(json.dumps([h5_error, regularizer, fit_error, unchanged]))
"""


def test_a_model_loaded_before_import_tf_admm_is_refused(tmp_path):
  paths = [tmp_path / 'admm.h5', tmp_path / 'admm.keras']
  model = tf_admm.attach_admm(small_model(), tf_admm.CompressionRate(4))
  for path in paths:
    model.save(path)
  saved = [path.read_bytes() for path in paths]
  result = subprocess.run([sys.executable, '-c', _LOAD_WITHOUT_TF_ADMM,
                           *map(str, paths)], capture_output=True, text=True,
                          check=True, timeout=300)
  h5_error, regularizer, fit_error, unchanged = json.loads(
      result.stdout.splitlines()[-1])
  # tf_keras's own H5 error names the class and its module.
  assert "Unknown regularizer: 'AdmmRegularizer'" in h5_error
  assert "'module': 'tf_admm.regularizer'" in h5_error
  # A .keras file loads with the class's name for a regularizer, which
  # tf_admm refuses before the first step.
  assert regularizer == 'AdmmRegularizer'
  assert fit_error == (
      "Layer 'conv' has 'AdmmRegularizer' as its kernel_regularizer: Keras "
      'loaded the model without that class. A model saved under ADMM loads '
      'after `import tf_admm`: import it first, then load the model again.')
  assert unchanged
  assert [path.read_bytes() for path in paths] == saved


@pytest.mark.parametrize('build, pruned, want', [
    (separable_cnn,
     ['sep/depthwise_kernel', 'sep/pointwise_kernel', 'dw/depthwise_kernel',
      'up/kernel', 'fc/kernel'],
     [('sep/bias', 8), ('bn/gamma', 8), ('bn/beta', 8),
      ('bn/moving_mean', 8), ('bn/moving_variance', 8), ('dw/bias', 16),
      ('up/bias', 5), ('fc/bias', 3)]),
    # Prunable weights left out of the pruned set are listed too.
    (separable_cnn, ['sep/pointwise_kernel', 'up/kernel'],
     [('sep/depthwise_kernel', 27), ('sep/bias', 8), ('bn/gamma', 8),
      ('bn/beta', 8), ('bn/moving_mean', 8), ('bn/moving_variance', 8),
      ('dw/depthwise_kernel', 144), ('dw/bias', 16), ('up/bias', 5),
      ('fc/kernel', 960), ('fc/bias', 3)]),
    (token_model, ['emb/embeddings', 'c1/kernel', 'fc/kernel'],
     [('c1/bias', 8), ('fc/bias', 3)]),
    (token_model, ['c1/kernel'],
     [('emb/embeddings', 400), ('c1/bias', 8), ('fc/kernel', 24),
      ('fc/bias', 3)]),
    (nested_model, ['block/ic/kernel', 'block/id/kernel', 'out/kernel'],
     [('block/ic/bias', 4), ('block/ibn/gamma', 4), ('block/ibn/beta', 4),
      ('block/ibn/moving_mean', 4), ('block/ibn/moving_variance', 4),
      ('block/id/bias', 8), ('out/bias', 3)]),
    (nested_model, [],
     [('block/ic/kernel', 36), ('block/ic/bias', 4), ('block/ibn/gamma', 4),
      ('block/ibn/beta', 4), ('block/ibn/moving_mean', 4),
      ('block/ibn/moving_variance', 4), ('block/id/kernel', 512),
      ('block/id/bias', 8), ('out/kernel', 24), ('out/bias', 3)]),
])
def test_unpruned_weights(build, pruned, want):
  model = build()
  unpruned = weights_lib.unpruned_weights(model, pruned)
  assert [(u['path'], u['size']) for u in unpruned] == want
  sizes = {w.path: w.size for w in tf_admm.prunable_weights(model)}
  assert (sum(sizes[p] for p in pruned) + sum(u['size'] for u in unpruned) ==
          model.count_params())
  # Nothing is counted twice.
  assert not set(pruned) & {u['path'] for u in unpruned}


# Weights of every common layer, on both Kerases.


def _recurrent_model(keras_module, layer_class):
  layers = keras_module.layers
  keras_module.utils.set_random_seed(0)
  inputs = keras_module.Input((10,), dtype='int32')
  x = layers.Embedding(50, 8, name='emb')(inputs)
  x = getattr(layers, layer_class)(16, name='rnn')(x)
  return keras_module.Model(inputs, layers.Dense(4, name='fc')(x))


@pytest.mark.parametrize('layer_class', ['SimpleRNN', 'GRU', 'LSTM'])
def test_recurrent_kernels_are_pruned_and_held(any_keras, layer_class):
  model = _recurrent_model(any_keras, layer_class)
  cell = model.get_layer('rnn').cell
  assert [(w.path, w.variable is v) for w, v in zip(
      tf_admm.prunable_weights(model)[1:3],
      (cell.kernel, cell.recurrent_kernel))] == [
          ('rnn/kernel', True), ('rnn/recurrent_kernel', True)]
  admm = tf_admm.attach_admm(model, tf_admm.CompressionRate(4))
  admm.compile(any_keras.optimizers.Adam(1e-2),
               any_keras.losses.SparseCategoricalCrossentropy(
                   from_logits=True))
  rng = np.random.default_rng(0)
  x, y = rng.integers(0, 50, (64, 10)), rng.integers(0, 4, 64)
  admm.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
      tf_admm.AdmmCallback(tf_admm.PolynomialRamp(epochs=1,
                                                  prune_every_steps=1,
                                                  lookahead_steps=1))])
  masks = tf_admm.admm_masks(admm)
  total = sum(m.size for m in masks.values())
  assert sum(int(m.sum()) for m in masks.values()) == round(total / 4)
  held = tf_admm.to_pruning_wrappers(admm)
  held.compile(any_keras.optimizers.Adam(1e-2),
               any_keras.losses.SparseCategoricalCrossentropy(
                   from_logits=True))
  held.fit(x, y, batch_size=16, epochs=1, verbose=0)
  for weight in tf_admm.prunable_weights(tf_admm.strip_pruning(held)):
    assert not np.any(weight.variable.numpy()[~masks[weight.path]])


def test_keras3_depthwise_kernels_are_prunable():
  keras3 = keras_compat.keras3
  keras3.utils.set_random_seed(0)
  model = keras3.Sequential([
      keras3.Input((8, 8, 3)),
      keras3.layers.DepthwiseConv2D(3, name='dw'),
      keras3.layers.SeparableConv2D(4, 3, name='sep'),
      keras3.layers.Flatten(),
      keras3.layers.Dense(2, name='fc')])
  assert [w.path for w in tf_admm.prunable_weights(model)] == [
      'dw/kernel', 'sep/depthwise_kernel', 'sep/pointwise_kernel',
      'fc/kernel']
  for constraint in (tf_admm.constraints.KeepLargest(),
                     tf_admm.Quantize('uniform', bits=2)):
    admm = tf_admm.attach_admm(model, tf_admm.CompressionRate(3),
                               constraint=constraint)
    assert admm.get_layer('dw').kernel.regularizer is not None


class Scaled(keras.layers.Layer):
  """A user's layer: a matrix product with a learnt scale per unit."""

  def __init__(self, units, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

  def build(self, input_shape):
    self.kernel = self.add_weight(
        'kernel', (input_shape[-1], self.units),
        regularizer=self.kernel_regularizer)
    self.scale = self.add_weight('scale', (self.units,), initializer='ones')

  def call(self, inputs):
    return keras.backend.dot(inputs, self.kernel) * self.scale

  def get_config(self):
    return dict(super().get_config(), units=self.units,
                kernel_regularizer=keras.regularizers.serialize(
                    self.kernel_regularizer))


def _scaled_model():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.Input((12,)), Scaled(8, name='scaled'),
                           L.Dense(3, name='fc')])


def test_an_unknown_layer_is_named_until_registered(monkeypatch):
  monkeypatch.setattr(weights_lib, 'PRUNABLE', dict(weights_lib.PRUNABLE))
  model = _scaled_model()
  with pytest.warns(UserWarning, match=r'scaled/kernel \(96\).*'
                    r'register_prunable'):
    tf_admm.attach_admm(model, tf_admm.CompressionRate(2))
  tf_admm.register_prunable(Scaled, ['kernel'])
  assert [w.path for w in tf_admm.prunable_weights(model)] == [
      'scaled/kernel', 'fc/kernel']
  admm = tf_admm.attach_admm(model, per_layer={'scaled': tf_admm.KeepRatio(
      0.25)})
  admm.compile(keras.optimizers.Adam(1e-2), 'mse')
  x = np.random.default_rng(0).normal(size=(32, 12)).astype(np.float32)
  admm.fit(x, np.zeros((32, 3)), epochs=2, batch_size=8, verbose=0,
           callbacks=[tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
               epochs=1, prune_every_steps=1, lookahead_steps=1))])
  assert int(tf_admm.admm_masks(admm)['scaled/kernel'].sum()) == 24


def test_register_prunable_refuses_what_is_not_a_layer_class_or_weight():
  with pytest.raises(TypeError, match='layer class'):
    tf_admm.register_prunable(Scaled(2), ['kernel'])
  with pytest.raises(TypeError, match='attribute name'):
    tf_admm.register_prunable(Scaled, [3])
  with pytest.raises(ValueError, match='names no weight'):
    tf_admm.register_prunable(Scaled, [])
