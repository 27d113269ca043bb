"""Models a user brings, through the public API: an application network on
Keras 3, a recurrent model on both Kerases, and a layer of the user's own."""

import numpy as np
import pytest
import tensorflow as tf

import tf_admm
from tf_admm import channel_handlers
from tf_admm import keras_compat
from tf_admm import macs
from tf_admm import surgery
from tf_admm import weights as weights_lib
from tests.conftest import application_mobilenet_v2
from tests.test_weights import Scaled
import tflite_export
from tflite_export import evaluate
from tflite_export import packed

keras2, keras3 = keras_compat.keras, keras_compat.keras3


def _compile(model, keras, optimizer=None):
  model.compile(optimizer or keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _matrices(model) -> dict:
  """{path: values} of every trainable weight matrix (biases left out)."""
  found = {}
  for path, layer in weights_lib.layers_with_paths(model):
    for variable in keras_compat.layer_weights(layer):
      name = keras_compat.variable_path(variable)
      if (variable.trainable and len(variable.shape) >= 2 and
          'bias' not in name.rsplit('/', 1)[-1]):
        found[f'{path}/{name}'] = variable.numpy()
  return found


def test_keras3_mobilenet_v2_prunes_quantizes_packs_and_resumes(tmp_path):
  model, x, y = application_mobilenet_v2(keras3)
  # Pruned 4x with every kernel on 2-bit levels ({±q, ±2q} and 0), half
  # of them held there in the first epoch, the rest in the second.
  admm = _compile(tf_admm.attach_admm(
      model, tf_admm.CompressionRate(4),
      constraint=tf_admm.Quantize('uniform', bits=2)), keras3)
  rounds = tf_admm.Rounds(0.5, epochs_per_round=1, update_every_steps=1)
  admm.fit(x, y, batch_size=8, epochs=1, verbose=0,
           callbacks=[tf_admm.AdmmCallback(rounds)])
  assert not any(r.all_held for _, r in tf_admm.admm_weights(admm))
  # Saved mid-ADMM, it loads with its whole state and trains on.
  path = str(tmp_path / 'admm.keras')
  admm.save(path)
  loaded = keras3.saving.load_model(path)
  states = [[v.numpy() for v in (r.z, r.u, r.mask, r.levels, r.held)]
            for _, r in tf_admm.admm_weights(admm)]
  for state, (_, regularizer) in zip(states, tf_admm.admm_weights(loaded)):
    for saved, restored in zip(state, (regularizer.z, regularizer.u,
                                       regularizer.mask, regularizer.levels,
                                       regularizer.held)):
      np.testing.assert_array_equal(saved, restored.numpy())
  loaded.fit(x, y, batch_size=8, epochs=2, initial_epoch=1, verbose=0,
             callbacks=[tf_admm.AdmmCallback(tf_admm.Rounds(
                 0.5, epochs_per_round=1, update_every_steps=1))])
  for weight, regularizer in tf_admm.admm_weights(loaded):
    assert regularizer.all_held, weight.path
    assert np.count_nonzero(weight.variable.numpy()) <= (
        regularizer.constraint.keep)
  # Packed: 4-bit convolutions and Dense kernel; LiteRT computes what
  # Keras does.
  plain = tf_admm.remove_admm(loaded)
  result = packed.pack(tflite_export.convert(plain))
  assert result.bits and set(result.bits.values()) <= {2, 4}
  outputs, _, _ = evaluate.predict(
      result.content, tf.data.Dataset.from_tensor_slices((x, y)))
  np.testing.assert_allclose(outputs, plain.predict(x, verbose=0),
                             rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('keras', [keras2, keras3], ids=['keras2', 'keras3'])
def test_a_recurrent_model_reaches_10x_over_all_its_matrices(keras):
  layers = keras.layers
  keras.utils.set_random_seed(0)
  inputs = keras.Input((10,), dtype='int32')
  x = layers.Embedding(200, 32, name='emb')(inputs)
  x = layers.LSTM(16, name='lstm')(x)
  model = keras.Model(inputs, layers.Dense(4, name='fc')(x))
  rng = np.random.default_rng(0)
  tokens, labels = rng.integers(0, 200, (64, 10)), rng.integers(0, 4, 64)
  admm = _compile(tf_admm.attach_admm(model, tf_admm.CompressionRate(10)),
                  keras)
  admm.fit(tokens, labels, batch_size=16, epochs=2, verbose=0, callbacks=[
      tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
          epochs=1, prune_every_steps=1, lookahead_steps=1))])
  pruned = tf_admm.strip_pruning(tf_admm.to_pruning_wrappers(admm))
  matrices = _matrices(pruned)
  assert len(matrices) == 4  # the table, both LSTM kernels, fc's kernel
  total = sum(m.size for m in matrices.values())
  kept = sum(np.count_nonzero(m) for m in matrices.values())
  assert kept == round(total / 10)
  for path, values in matrices.items():
    assert np.count_nonzero(values) >= 0.01 * values.size, path


class ScaledHandler(channel_handlers.Producer):
  """How `Scaled` makes channels: a kernel (inputs, units), a scale per
  unit."""

  def __init__(self):
    super().__init__('units')

  def respond(self, layer, x):
    return np.tensordot(x, layer.kernel.numpy(), axes=1) * (
        layer.scale.numpy())

  def macs(self, layer, input_shapes, output_shape):
    return input_shapes[0][-1] * output_shape[-1]


def test_a_registered_user_layer_is_channel_pruned_and_cut(monkeypatch):
  monkeypatch.setattr(weights_lib, 'PRUNABLE', dict(weights_lib.PRUNABLE))
  monkeypatch.setattr(channel_handlers, 'HANDLERS',
                      dict(channel_handlers.HANDLERS))
  tf_admm.register_prunable(Scaled, ['kernel'])
  tf_admm.register_channel_handler(Scaled, ScaledHandler())
  keras2.utils.set_random_seed(0)
  model = keras2.Sequential([keras2.Input((12,)), Scaled(8, name='scaled'),
                             keras2.layers.Dense(3, name='fc')])
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 12)).astype(np.float32)
  y = rng.integers(0, 3, 32)
  admm = _compile(tf_admm.attach_admm(
      model, per_layer={'scaled': tf_admm.KeepRatio(0.5)},
      constraint=tf_admm.KeepChannels()), keras2)
  admm.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[
      tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
          epochs=1, prune_every_steps=1, lookahead_steps=1))])
  masked = tf_admm.strip_pruning(tf_admm.to_pruning_wrappers(admm))
  small, widths = surgery.remove_channels(masked)
  assert widths['scaled'] == (8, 4)
  assert small.get_layer('scaled').scale.shape == (4,)
  np.testing.assert_allclose(small(x), masked(x), rtol=1e-5, atol=1e-5)
  assert macs.model_macs(small)['layers']['scaled'] == 12 * 4
