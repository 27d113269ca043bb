import csv

import numpy as np
import pytest
import tf_keras as keras

import tf_admm
from tests.conftest import random_batch, small_model
from tests.test_projections import numpy_keep_top_k


def _admm_model(masks=None):
  model = tf_admm.attach_admm(small_model(), ['conv', 'dense'], rho=0.01,
                              masks=masks)
  model.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


PER_LAYER = {'conv': tf_admm.KeepRatio(0.5), 'dense': tf_admm.CompressionRate(8)}


def test_initialization_and_update_match_numpy():
  model = _admm_model()
  callback = tf_admm.AdmmCallback(per_layer=PER_LAYER, update_every_epochs=1,
                                  rho_growth=1.5)
  callback.set_model(model)
  callback.on_train_begin()
  pairs = tf_admm.admm_layers(model)
  keep = {'conv': 18, 'dense': 24}
  for layer, regularizer in pairs:
    np.testing.assert_array_equal(
        regularizer.z.numpy(),
        numpy_keep_top_k(layer.kernel.numpy(), keep[layer.name])[0])
    assert not regularizer.u.numpy().any()

  rng = np.random.default_rng(0)
  before = {}
  for layer, regularizer in pairs:  # as if a W-step had moved W and U
    layer.kernel.assign(rng.normal(size=layer.kernel.shape))
    regularizer.u.assign(rng.normal(size=layer.kernel.shape) * 0.1)
    before[layer.name] = (layer.kernel.numpy(), regularizer.u.numpy(),
                          regularizer.z.numpy())
  logs = {}
  callback.on_epoch_end(0, logs)  # the first epoch ends: one update
  assert callback.updates == 1
  gaps, norms = 0.0, 0.0
  for layer, regularizer in pairs:
    w, u, z_old = before[layer.name]
    z = numpy_keep_top_k(w + u, keep[layer.name])[0]
    np.testing.assert_array_equal(regularizer.z.numpy(), z)
    np.testing.assert_allclose(regularizer.u.numpy(), u + w - z, atol=1e-6)
    assert float(regularizer.rho) == pytest.approx(0.015)
    residual = np.linalg.norm(w - z) / np.linalg.norm(w)
    assert logs[f'admm_primal_residual/{layer.name}'] == pytest.approx(
        residual, rel=1e-5)
    assert logs[f'admm_z_change/{layer.name}'] == pytest.approx(
        np.linalg.norm(z - z_old), rel=1e-5)
    assert logs[f'admm_z_sparsity/{layer.name}'] == pytest.approx(
        1 - keep[layer.name] / w.size)
    gaps += np.sum((w - z)**2)
    norms += np.sum(w**2)
  assert logs['admm_primal_residual'] == pytest.approx(np.sqrt(gaps / norms),
                                                       rel=1e-5)
  assert logs['admm_rho'] == pytest.approx(0.015)


def test_fit_logs_to_history_and_csv(tmp_path):
  model = _admm_model()
  x, y = random_batch(64)
  callback = tf_admm.AdmmCallback(per_layer=PER_LAYER, update_every_steps=2,
                                  rho_growth=2.0)
  csv_path = tmp_path / 'log.csv'
  history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                      callbacks=[callback, keras.callbacks.CSVLogger(csv_path)])
  assert callback.updates == 4  # 8 steps, one update every 2
  for _, regularizer in tf_admm.admm_layers(model):
    assert float(regularizer.rho) == pytest.approx(0.01 * 2**4)
  for key in ('admm_primal_residual', 'admm_z_change', 'admm_rho',
              'admm_z_sparsity', 'admm_primal_residual/conv',
              'admm_z_sparsity/dense'):
    assert len(history.history[key]) == 2
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert float(rows[-1]['admm_rho']) == pytest.approx(0.16)


def test_restored_state_is_not_reinitialized():
  model = _admm_model()
  x, y = random_batch(32)
  callback = tf_admm.AdmmCallback(per_layer=PER_LAYER, update_every_epochs=1)
  model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
  (_, regularizer), _ = tf_admm.admm_layers(model)
  regularizer.u.assign(regularizer.u + 1.0)
  u = regularizer.u.numpy()
  callback.on_train_begin()  # a second fit, or a resumed run
  np.testing.assert_array_equal(regularizer.u.numpy(), u)


def test_masked_admm_keeps_pruned_weights_exactly_zero_every_step():
  masks = {'conv': np.random.default_rng(0).random((3, 3, 1, 4)) < 0.5}
  model = _admm_model(masks=masks)
  x, y = random_batch(64)
  pruned = ~masks['conv']
  seen = []

  class CheckZeros(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      seen.append(np.abs(model.get_layer('conv').kernel.numpy()[pruned]).max())

  callback = tf_admm.AdmmCallback(per_layer={'conv': tf_admm.KeepRatio(0.25),
                                             'dense': tf_admm.KeepRatio(0.5)},
                                  update_every_steps=3)
  model.fit(x, y, batch_size=8, epochs=2, verbose=0,
            callbacks=[callback, CheckZeros()])
  assert len(seen) == 16 and max(seen) == 0.0
  regularizer = model.get_layer('conv').kernel_regularizer
  assert not regularizer.z.numpy()[pruned].any()
  kernel = model.get_layer('conv').kernel.numpy()
  assert np.abs(kernel[~pruned]).min() > 0  # the others did train


def test_unbuilt_model_initializes_after_first_step():
  model = tf_admm.attach_admm(
      keras.Sequential([keras.layers.Dense(3, name='d')]), ['d'])
  model.compile('adam', 'mse')
  callback = tf_admm.AdmmCallback(tf_admm.Sparsity(0.5), update_every_epochs=1)
  history = model.fit(np.ones((8, 4)), np.zeros((8, 3)), epochs=1, verbose=0,
                      callbacks=[callback])
  assert history.history['admm_z_sparsity'] == [0.5]


@pytest.mark.parametrize('kwargs, match', [
    (dict(target=tf_admm.Sparsity(0.5)), 'exactly one'),
    (dict(target=tf_admm.Sparsity(0.5), update_every_epochs=1,
          update_every_steps=1), 'exactly one'),
    (dict(target=tf_admm.Sparsity(0.5), update_every_epochs=0), '>= 1'),
    (dict(target=tf_admm.Sparsity(0.5), update_every_steps=2.5), '>= 1'),
    (dict(target=tf_admm.Sparsity(0.5), update_every_epochs=1,
          rho_growth=0.9), 'rho_growth'),
    (dict(update_every_epochs=1), 'needs a `target`'),
])
def test_bad_arguments_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tf_admm.AdmmCallback(**kwargs)


def test_model_without_admm_is_rejected_before_training():
  model = small_model()
  model.compile('adam', 'mse')
  callback = tf_admm.AdmmCallback(tf_admm.Sparsity(0.5), update_every_epochs=1)
  with pytest.raises(ValueError, match='attach_admm'):
    model.fit(*random_batch(8), epochs=1, verbose=0, callbacks=[callback])


def test_stages_prune_progressively_and_hold_earlier_zeros():
  model = _admm_model()
  x, y = random_batch(64)
  callback = tf_admm.AdmmCallback(tf_admm.CompressionRate(6),
                                  update_every_epochs=1, rho_growth=1.5,
                                  stage_rates=[2, 6], epochs_per_stage=2)
  stage_one = {}

  class AfterStageOne(keras.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):
      if epoch == 1:
        stage_one.update({l.name: l.kernel.numpy() == 0
                          for l in tf_admm.prunable_layers(model)})

  history = model.fit(x, y, batch_size=16, epochs=4, verbose=0,
                      callbacks=[callback, AfterStageOne()])
  assert history.history['admm_stage'] == [0, 1, 1, 1]
  total = sum(zeros.size for zeros in stage_one.values())
  # The first boundary hard-pruned to 2x ...
  assert sum(z.sum() for z in stage_one.values()) == pytest.approx(total / 2,
                                                                    abs=1)
  for layer, regularizer in tf_admm.admm_layers(model):
    # ... and those zeros held through the second stage.
    assert not layer.kernel.numpy()[stage_one[layer.name]].any()
    assert float(regularizer.rho) == pytest.approx(0.01 * 1.5**2)
  assert history.history['admm_z_sparsity'][-1] == pytest.approx(5 / 6,
                                                                 abs=0.01)


def test_last_stage_must_match_the_target():
  model = _admm_model()
  callback = tf_admm.AdmmCallback(tf_admm.CompressionRate(6),
                                  update_every_epochs=1, stage_rates=[2, 5],
                                  epochs_per_stage=1)
  with pytest.raises(ValueError, match='must equal the overall rate'):
    model.fit(*random_batch(16), epochs=1, verbose=0, callbacks=[callback])


@pytest.mark.parametrize('kwargs, match', [
    (dict(stage_rates=[2, 4]), 'together'),
    (dict(stage_rates=[4, 2], epochs_per_stage=1), 'increase'),
    (dict(stage_rates=[2, 4], epochs_per_stage=0), 'epochs_per_stage'),
])
def test_bad_stage_arguments_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tf_admm.AdmmCallback(tf_admm.CompressionRate(4), update_every_epochs=1,
                         **kwargs)


def test_ramp_prunes_gradually_aims_ahead_and_resumes():
  model = _admm_model()
  x, y = random_batch(64)  # 4 steps per epoch at batch size 16
  ramp = tf_admm.PolynomialRamp(ramp_steps=8, prune_every_steps=2,
                                lookahead_steps=2)
  callback = tf_admm.AdmmCallback(per_layer=PER_LAYER, ramp=ramp)
  final = {'conv': 18, 'dense': 24}
  sizes = {'conv': 36, 'dense': 192}
  seen = []

  class Record(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      seen.append({l.name: (l.kernel.numpy(), r.z.numpy(), r.u.numpy(),
                            float(r.rho))
                   for l, r in tf_admm.admm_layers(model)})

  # Two fits of one epoch each: the second continues the ramp from the
  # optimizer's step count, as a fit resumed by BackupAndRestore would.
  for _ in range(2):
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[callback, Record()])
  for step, layers in enumerate(seen, start=1):
    for name, (kernel, z, u, rho) in layers.items():
      pruned_at = step - step % 2  # the last hard prune so far
      assert np.count_nonzero(kernel) == ramp.keep(sizes[name], final[name],
                                                   pruned_at), (step, name)
      if step > 1:  # once pruned, a weight stays zero
        assert not kernel[seen[step - 2][name][0] == 0].any()
      if step % 2 == 0:  # each prune restarts ADMM, aimed 2 steps ahead
        np.testing.assert_array_equal(z, numpy_keep_top_k(
            kernel, ramp.keep(sizes[name], final[name], step + 2))[0])
        assert not u.any() and rho == pytest.approx(0.01)
  assert [np.count_nonzero(c['conv'][0]) for c in seen] == [
      36, 26, 26, 20, 20, 18, 18, 18]


def test_ramp_is_not_combined_with_stages():
  ramp = tf_admm.PolynomialRamp(ramp_steps=8)
  with pytest.raises(ValueError, match='not both'):
    tf_admm.AdmmCallback(tf_admm.CompressionRate(4), ramp=ramp,
                         update_every_epochs=1, stage_rates=[2, 4],
                         epochs_per_stage=1)


def test_tensorboard_records_the_admm_metrics(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = _admm_model()
  callback = tf_admm.AdmmCallback(per_layer=PER_LAYER, update_every_epochs=1)
  model.fit(*random_batch(32), epochs=2, verbose=0, callbacks=[
      callback, keras.callbacks.TensorBoard(str(tmp_path))])
  tags = set()
  for event_file in (tmp_path / 'train').iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      tags.update(value.tag for value in event.summary.value)
  assert {'epoch_admm_primal_residual', 'epoch_admm_rho',
          'epoch_admm_z_sparsity/dense'} <= tags
