"""The whole path on the models a new user tried: a global 10x by ADMM on a
polynomial ramp, masked retraining in tfmot wrappers, strip, then the rate
counted with numpy on the stripped model. Random data: the point is the
sparsity, not the accuracy."""

import warnings

import numpy as np
import pytest
import tf_keras as keras

import tf_admm
import tf_admm.pruning_wrapper
from tf_admm import weights as weights_lib
from tests.conftest import nested_model, separable_cnn, token_model

RATE = 10
EXAMPLES, BATCH = 256, 32  # 8 steps an epoch


CASES = {
    'cnn': (separable_cnn, (10, 10, 3), False,
            ['sep/depthwise_kernel', 'sep/pointwise_kernel',
             'dw/depthwise_kernel', 'up/kernel', 'fc/kernel'],
            ['sep/bias', 'bn/gamma', 'bn/beta', 'bn/moving_mean',
             'bn/moving_variance', 'dw/bias', 'up/bias', 'fc/bias']),
    'tokens': (token_model, (10,), True,
               ['emb/embeddings', 'c1/kernel', 'fc/kernel'],
               ['c1/bias', 'fc/bias']),
    'nested': (nested_model, (6, 6, 1), False,
               ['block/ic/kernel', 'block/id/kernel', 'out/kernel'],
               ['block/ic/bias', 'block/ibn/gamma', 'block/ibn/beta',
                'block/ibn/moving_mean', 'block/ibn/moving_variance',
                'block/id/bias', 'out/bias']),
}


def _data(shape, tokens, seed=0):
  rng = np.random.default_rng(seed)
  if tokens:
    x = rng.integers(0, 50, size=(EXAMPLES,) + shape).astype(np.int32)
  else:
    x = rng.normal(size=(EXAMPLES,) + shape).astype(np.float32)
  return x, rng.integers(0, 3, size=EXAMPLES)


def _compile(model):
  model.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _nonzeros(weights):
  return sum(np.count_nonzero(w.variable.numpy()) for w in weights)


@pytest.mark.parametrize('case', sorted(CASES))
def test_global_10x_end_to_end(case):
  build, shape, tokens, prunable_paths, unpruned_paths = CASES[case]
  model = build(seed=0)
  assert model.input_shape[1:] == shape
  x, y = _data(shape, tokens)
  dense_weights = tf_admm.prunable_weights(model)
  assert [w.path for w in dense_weights] == prunable_paths
  total = sum(w.size for w in dense_weights)
  budget = round(total / RATE)
  assert _nonzeros(dense_weights) == total

  # ADMM along a ramp that ends within the fit.
  admm = _compile(tf_admm.attach_admm(model, tf_admm.CompressionRate(RATE),
                                      rho=1e-2))
  assert [w.path for w, _ in tf_admm.admm_weights(admm)] == prunable_paths
  schedule = tf_admm.PolynomialRamp(epochs=2, prune_every_steps=4,
                                    lookahead_steps=8)
  with warnings.catch_warnings():
    warnings.simplefilter('error', tf_admm.ScheduleNotFinished)
    admm.fit(x, y, batch_size=BATCH, epochs=3, verbose=0,
             callbacks=[tf_admm.AdmmCallback(schedule)])
  # The ramp's last hard prune left the ADMM weights at the target.
  assert _nonzeros(tf_admm.prunable_weights(admm)) == budget
  admm_masks = tf_admm.admm_masks(admm)

  # Masked retraining in tfmot wrappers.
  wrapped = _compile(tf_admm.to_pruning_wrappers(admm))
  masks = tf_admm.masks_of(wrapped)
  assert sorted(masks) == sorted(prunable_paths)
  for path, mask in masks.items():
    np.testing.assert_array_equal(mask, admm_masks[path])
  assert sum(int(m.sum()) for m in masks.values()) == budget
  wrapped.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[tf_admm.update_pruning_step()])

  stripped = tf_admm.strip_pruning(wrapped)
  assert not any(isinstance(layer, tf_admm.pruning_wrapper.PruneLowMagnitude)
                 for _, layer in weights_lib.layers_with_paths(stripped))
  weights = tf_admm.prunable_weights(stripped)
  assert [w.path for w in weights] == prunable_paths
  # The rate, counted on the stripped model's weights.
  values = {w.path: w.variable.numpy() for w in weights}
  entries = sum(v.size for v in values.values())
  nonzeros = sum(np.count_nonzero(v) for v in values.values())
  assert entries == total
  assert nonzeros == budget
  assert abs(entries / nonzeros - RATE) <= 0.01 * RATE
  for path, value in values.items():
    assert np.count_nonzero(value) < value.size, path  # actually sparse
    np.testing.assert_array_equal(value != 0, masks[path])

  # What is left unpruned: exactly the biases and BN parameters.
  unpruned = weights_lib.unpruned_weights(stripped, prunable_paths)
  assert [u['path'] for u in unpruned] == unpruned_paths
  assert entries + sum(u['size'] for u in unpruned) == stripped.count_params()
  assert stripped.count_params() == model.count_params()

  probe = x[:16]
  np.testing.assert_allclose(stripped.predict(probe, verbose=0),
                             wrapped.predict(probe, verbose=0), rtol=1e-5,
                             atol=1e-6)


def test_channels_end_to_end_on_the_api():
  """What the README's channel bullet says, on a model with
  BatchNormalization and zero padding: ADMM toward whole channels,
  masked retraining with the pruned channels silenced, strip, cut."""
  inputs = keras.Input((10, 10, 3))
  x = keras.layers.Conv2D(12, 3, padding='same', use_bias=False,
                          name='conv')(inputs)
  x = keras.layers.BatchNormalization(name='bn')(x)
  x = keras.layers.ReLU()(x)
  x = keras.layers.Conv2D(8, 3, padding='same', activation='relu',
                          name='conv2')(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(3, name='fc')(x)
  model = keras.Model(inputs, outputs)
  x, y = _data((10, 10, 3), tokens=False)
  admm = _compile(tf_admm.attach_admm(
      model, per_layer={'conv': tf_admm.KeepRatio(0.25),
                        'conv2': tf_admm.KeepRatio(0.5)},
      constraint=tf_admm.KeepChannels(), rho=1e-2))
  admm.fit(x, y, batch_size=BATCH, epochs=2, verbose=0,
           callbacks=[tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
               epochs=2, prune_every_steps=4, lookahead_steps=8))])
  wrapped = _compile(tf_admm.to_pruning_wrappers(admm))
  assert tf_admm.surgery.silence_pruned_channels(wrapped) == {'conv': 9,
                                                              'conv2': 4}
  wrapped.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[tf_admm.update_pruning_step()])
  stripped = tf_admm.strip_pruning(wrapped)
  small, widths = tf_admm.remove_channels(stripped)
  assert widths == {'conv': (12, 3), 'conv2': (8, 4), 'fc': (3, 3)}
  np.testing.assert_allclose(small.predict(x[:16], verbose=0),
                             stripped.predict(x[:16], verbose=0),
                             rtol=1e-4, atol=1e-5)
