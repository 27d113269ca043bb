import csv

import numpy as np
import pytest
import tensorflow as tf

import tf_admm
from tf_admm.keras_compat import keras
from tf_admm.keras_compat import keras3
from tests.conftest import random_batch, small_model
from tests.test_projections import numpy_keep_top_k

PER_LAYER = {'conv': tf_admm.KeepRatio(0.5),
             'dense': tf_admm.CompressionRate(8)}
KEEP = {'conv/kernel': 18, 'dense/kernel': 24}  # of 36 and 192
SIZES = {'conv/kernel': 36, 'dense/kernel': 192}


def _admm_model(masks=None, seed=0, keras_module=keras):
  model = tf_admm.attach_admm(small_model(seed, keras=keras_module),
                              per_layer=PER_LAYER, rho=0.01, masks=masks)
  model.compile(keras_module.optimizers.Adam(1e-2),
                keras_module.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  return model


def _state(model):
  return {w.path: (w.variable.numpy(), r.z.numpy(), r.u.numpy(),
                   float(r.rho.numpy())) for w, r in tf_admm.admm_weights(model)}


class Record(keras.callbacks.Callback):
  """The ADMM state after every step."""

  def __init__(self):
    super().__init__()
    self.steps = []

  def on_train_batch_end(self, batch, logs=None):
    self.steps.append(_state(self.model))


def test_start_and_update_match_numpy():
  model = _admm_model()
  callback = tf_admm.AdmmCallback(tf_admm.Stages(rho_growth=1.5),
                                  per_weight_metrics=True)
  callback.set_model(model)
  callback.set_params({'steps': 4, 'epochs': 1})
  callback.on_train_begin()
  callback.on_train_batch_begin(0)  # ADMM starts before the first step
  pairs = tf_admm.admm_weights(model)
  for weight, regularizer in pairs:
    np.testing.assert_array_equal(
        regularizer.z.numpy(),
        numpy_keep_top_k(weight.variable.numpy(), KEEP[weight.path])[0])
    assert not regularizer.u.numpy().any()

  rng = np.random.default_rng(0)
  before = {}
  for weight, regularizer in pairs:  # as if W-steps had moved W and U
    weight.variable.assign(rng.normal(size=weight.shape))
    regularizer.u.assign(rng.normal(size=weight.shape) * 0.1)
    before[weight.path] = (weight.variable.numpy(), regularizer.u.numpy(),
                           regularizer.z.numpy())
  for batch in range(4):  # one epoch: Stages updates once, at its end
    callback.on_train_batch_begin(batch)
    model.optimizer.iterations.assign_add(1)  # the step the schedule counts
    callback.on_train_batch_end(batch)
  logs = {}
  callback.on_epoch_end(0, logs)
  gaps, norms = 0.0, 0.0
  for weight, regularizer in pairs:
    w, u, z_old = before[weight.path]
    z = numpy_keep_top_k(w + u, KEEP[weight.path])[0]
    np.testing.assert_array_equal(regularizer.z.numpy(), z)
    np.testing.assert_allclose(regularizer.u.numpy(), u + w - z, atol=1e-6)
    assert float(regularizer.rho) == pytest.approx(0.015)
    path = weight.path
    assert logs[f'admm_primal_residual/{path}'] == pytest.approx(
        np.linalg.norm(w - z) / np.linalg.norm(w), rel=1e-5)
    assert logs[f'admm_z_change/{path}'] == pytest.approx(
        np.linalg.norm(z - z_old), rel=1e-5)
    assert logs[f'admm_z_sparsity/{path}'] == pytest.approx(
        1 - KEEP[path] / w.size)
    gaps += np.sum((w - z)**2)
    norms += np.sum(w**2)
  assert logs['admm_primal_residual'] == pytest.approx(np.sqrt(gaps / norms),
                                                       rel=1e-5)
  assert logs['admm_rho'] == pytest.approx(0.015)
  assert logs['admm_progress'] == 1.0


def test_fit_logs_overall_metrics_to_history_and_csv(tmp_path):
  model = _admm_model()
  x, y = random_batch(64)
  callback = tf_admm.AdmmCallback(tf_admm.Stages(update_every_steps=2,
                                                 rho_growth=2.0))
  csv_path = tmp_path / 'log.csv'
  history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                      callbacks=[callback, keras.callbacks.CSVLogger(csv_path)])
  for _, regularizer in tf_admm.admm_weights(model):  # 8 steps, 4 updates
    assert float(regularizer.rho) == pytest.approx(0.01 * 2**4)
  admm_keys = {k for k in history.history if k.startswith('admm_')}
  assert admm_keys == {'admm_primal_residual', 'admm_z_change', 'admm_rho',
                       'admm_z_sparsity', 'admm_progress'}  # no per weight
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert float(rows[-1]['admm_rho']) == pytest.approx(0.16)


def test_epoch_end_logs_the_last_update_not_the_restart_after_a_hold():
  """Rounds holds weights at each epoch end and restarts ADMM there; the
  logged rho and Z change are still those of the epoch's last Z/U step."""
  model = tf_admm.attach_admm(small_model(), per_layer=PER_LAYER, rho=0.01,
                              constraint=tf_admm.Quantize('uniform', bits=2))
  model.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x, y = random_batch(64)
  schedule = tf_admm.Rounds(0.5, epochs_per_round=1, update_every_steps=1,
                            rho_growth=1.5)
  history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                      callbacks=[tf_admm.AdmmCallback(schedule)])
  # Four steps an epoch; the fourth is the hold, so three updates grew rho.
  assert history.history['admm_rho'] == pytest.approx([0.01 * 1.5**3] * 2)
  assert all(change > 0 for change in history.history['admm_z_change'])
  for _, regularizer in tf_admm.admm_weights(model):
    assert float(regularizer.rho) == pytest.approx(0.01)  # restarted


def test_a_second_fit_continues_the_admm_state():
  model = _admm_model()
  x, y = random_batch(32)
  callback = tf_admm.AdmmCallback(tf_admm.Stages())
  model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
  (_, regularizer), _ = tf_admm.admm_weights(model)
  regularizer.u.assign(regularizer.u + 1.0)
  u = regularizer.u.numpy()
  callback.on_train_begin()
  callback.on_train_batch_begin(0)
  np.testing.assert_array_equal(regularizer.u.numpy(), u)


def test_masked_admm_keeps_pruned_weights_exactly_zero_every_step():
  masks = {'conv/kernel': np.random.default_rng(0).random((3, 3, 1, 4)) < 0.7}
  model = _admm_model(masks=masks)
  pruned = ~masks['conv/kernel']
  record = Record()
  model.fit(*random_batch(64), batch_size=8, epochs=2, verbose=0,
            callbacks=[tf_admm.AdmmCallback(tf_admm.Stages(
                update_every_steps=3)), record])
  assert len(record.steps) == 16
  assert not any(s['conv/kernel'][0][pruned].any() for s in record.steps)
  assert not record.steps[-1]['conv/kernel'][1][pruned].any()  # Z too
  kernel = record.steps[-1]['conv/kernel'][0]
  assert np.abs(kernel[~pruned]).min() > 0  # the others did train


def test_bad_use_is_rejected_before_training():
  with pytest.raises(ValueError, match='needs a tf_admm schedule'):
    tf_admm.AdmmCallback(tf_admm.CompressionRate(4))
  model = small_model()
  model.compile('adam', 'mse')
  with pytest.raises(ValueError, match='attach_admm'):
    model.fit(*random_batch(8), epochs=1, verbose=0,
              callbacks=[tf_admm.AdmmCallback(tf_admm.Stages())])
  x, y = random_batch(8)

  def batches():  # a generator: its length is unknown
    yield x, y

  with pytest.raises(ValueError, match='known length'):
    _admm_model().fit(batches(), epochs=1, verbose=0,
                      callbacks=[tf_admm.AdmmCallback(tf_admm.Stages())])


def test_a_recompiled_model_cannot_continue_its_schedule():
  model = _admm_model()
  x, y = random_batch(32)
  callback = tf_admm.AdmmCallback(tf_admm.Stages())
  model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
  model.compile('adam', 'mse')  # a fresh optimizer, at step 0
  with pytest.raises(ValueError, match='compiled anew'):
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])


def test_several_steps_per_execution_are_refused():
  model = _admm_model()
  model.compile('adam', 'mse', steps_per_execution=2)
  with pytest.raises(ValueError, match='steps_per_execution=1'):
    model.fit(*random_batch(32), epochs=1, verbose=0,
              callbacks=[tf_admm.AdmmCallback(tf_admm.Stages())])


def test_stages_prune_progressively_and_hold_earlier_zeros():
  model = tf_admm.attach_admm(small_model(), tf_admm.CompressionRate(6),
                              rho=0.01)
  model.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  record = Record()
  history = model.fit(*random_batch(64), batch_size=16, epochs=4, verbose=0,
                      callbacks=[tf_admm.AdmmCallback(tf_admm.Stages(
                          rates=[2], epochs_per_stage=2, rho_growth=1.5)),
                                 record])
  # Each weight's count moves linearly with progress, so at 2x overall the
  # progress is (1 - 1/2) / (1 - 1/6) = 0.6.
  assert history.history['admm_progress'] == [0.6, 1.0, 1.0, 1.0]
  stage_one = record.steps[7]  # the hard prune after step 8
  zeros = {path: s[0] == 0 for path, s in stage_one.items()}
  total = sum(z.size for z in zeros.values())
  assert sum(z.sum() for z in zeros.values()) == pytest.approx(total / 2,
                                                               abs=2)
  for path, state in record.steps[-1].items():
    kernel, _, _, rho = state
    assert not kernel[zeros[path]].any()  # held through the last stage
    assert rho == pytest.approx(0.01 * 1.5**2)  # restarted, then 2 updates
  assert history.history['admm_z_sparsity'][-1] == pytest.approx(5 / 6,
                                                                 abs=0.01)


def test_ramp_prunes_gradually_aims_ahead_and_resumes():
  model = _admm_model()
  x, y = random_batch(64)  # 4 steps per epoch at batch size 16
  ramp = tf_admm.PolynomialRamp(epochs=2, prune_every_steps=2,
                                lookahead_steps=2)
  callback = tf_admm.AdmmCallback(ramp)
  record = Record()

  def count(path, step):  # numpy reference of the ramp's count
    progress = 1 - (1 - min(step, 8) / 8)**3
    return round(SIZES[path] + (KEEP[path] - SIZES[path]) * progress)

  # Two fits of one epoch each: the second continues the ramp from the
  # optimizer's step count, as a fit resumed by BackupAndRestore would.
  with pytest.warns(tf_admm.ScheduleNotFinished, match='4 steps into'):
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[callback, record])
  model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
            callbacks=[callback, record])
  for step, state in enumerate(record.steps, start=1):
    for path, (kernel, z, u, rho) in state.items():
      assert np.count_nonzero(kernel) == count(path, step - step % 2)
      if step > 1:  # once pruned, a weight stays zero
        assert not kernel[record.steps[step - 2][path][0] == 0].any()
      if step % 2 == 0:  # each prune restarts ADMM, aimed 2 steps ahead
        np.testing.assert_array_equal(
            z, numpy_keep_top_k(kernel, count(path, step + 2))[0])
        assert not u.any() and rho == pytest.approx(0.01)
  assert [np.count_nonzero(s['conv/kernel'][0]) for s in record.steps] == [
      36, 26, 26, 20, 20, 18, 18, 18]


def test_a_fit_too_short_for_its_ramp_says_how_far_it_got():
  model = _admm_model()
  with pytest.warns(tf_admm.ScheduleNotFinished,
                    match=r'8 steps into a schedule of 40.*reached 1\.\d\dx'):
    model.fit(*random_batch(64), batch_size=16, epochs=2, verbose=0,
              callbacks=[tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
                  epochs=10, prune_every_steps=2))])


@pytest.mark.parametrize('keras_module', [keras, keras3],
                         ids=['keras2', 'keras3'])
@pytest.mark.parametrize('backup_first', [True, False])
def test_backup_and_restore_resumes_mid_admm(tmp_path, backup_first,
                                             keras_module):
  x, y = random_batch(64)
  backup = str(tmp_path / 'backup')
  saved = {}

  class StopInSecondEpoch(keras_module.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):  # after the backup is written
      saved.update(_state(self.model))

    def on_train_batch_end(self, batch, logs=None):
      if saved and batch == 1:
        raise RuntimeError('interrupted')

  def fit(model, *extra):
    callbacks = [keras_module.callbacks.BackupAndRestore(backup),
                 tf_admm.AdmmCallback(tf_admm.Stages(update_every_steps=3,
                                                     rho_growth=2.0))]
    if not backup_first:  # the restore then comes after ADMM's start
      callbacks.reverse()
    return model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                     callbacks=callbacks + list(extra))

  with pytest.raises(RuntimeError, match='interrupted'):
    fit(_admm_model(keras_module=keras_module), StopInSecondEpoch())
  restored = {}

  class AtStart(keras_module.callbacks.Callback):

    def on_train_begin(self, logs=None):
      restored.update(_state(self.model))

  # Other weights: all must come from the backup.
  resumed = _admm_model(seed=1, keras_module=keras_module)
  history = fit(resumed, AtStart())
  for path, (kernel, z, u, rho) in saved.items():
    np.testing.assert_array_equal(restored[path][0], kernel)
    np.testing.assert_array_equal(restored[path][1], z)
    np.testing.assert_array_equal(restored[path][2], u)
    assert restored[path][3] == rho
  assert len(history.history['loss']) == 2  # epochs 2 and 3 only
  assert int(resumed.optimizer.iterations.numpy()) == 12
  regularizer = tf_admm.admm_weights(resumed)[0][1]
  assert int(regularizer.start_step.numpy()) == 0  # not restarted
  # Updates fell on steps 3, 6, 9 and 12 of the schedule, across the resume.
  assert float(regularizer.rho.numpy()) == pytest.approx(0.01 * 2**4)


def test_model_checkpoint_weights_carry_the_admm_state(tmp_path):
  x, y = random_batch(64)
  path = str(tmp_path / 'ckpt')  # TF format: the ADMM state goes with it
  model = _admm_model()
  schedule = tf_admm.Stages(update_every_steps=3, rho_growth=2.0)
  model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
            callbacks=[tf_admm.AdmmCallback(schedule),
                       keras.callbacks.ModelCheckpoint(
                           path, save_weights_only=True)])
  saved = _state(model)
  masks = {w.path: r.mask.numpy() for w, r in tf_admm.admm_weights(model)}

  restored = _admm_model(seed=1)
  restored.load_weights(path)
  for weight, regularizer in tf_admm.admm_weights(restored):
    kernel, z, u, rho = saved[weight.path]
    np.testing.assert_array_equal(weight.variable.numpy(), kernel)
    np.testing.assert_array_equal(regularizer.z.numpy(), z)
    np.testing.assert_array_equal(regularizer.u.numpy(), u)
    np.testing.assert_array_equal(regularizer.mask.numpy(), masks[weight.path])
    assert float(regularizer.rho.numpy()) == rho == pytest.approx(0.01 * 2**2)
    assert int(regularizer.start_step.numpy()) == 0
  # The schedule goes on from the restored optimizer step: updates at
  # steps 9 and 12.
  restored.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
               callbacks=[tf_admm.AdmmCallback(schedule)])
  assert int(restored.optimizer.iterations.numpy()) == 12
  assert float(tf_admm.admm_weights(restored)[0][1].rho.numpy()) == (
      pytest.approx(0.01 * 2**4))


def test_tensorboard_records_the_admm_metrics(tmp_path):
  model = _admm_model()
  callback = tf_admm.AdmmCallback(tf_admm.Stages(), per_weight_metrics=True)
  model.fit(*random_batch(32), epochs=2, verbose=0, callbacks=[
      callback, keras.callbacks.TensorBoard(str(tmp_path))])
  tags = set()
  for event_file in (tmp_path / 'train').iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      tags.update(value.tag for value in event.summary.value)
  assert {'epoch_admm_primal_residual', 'epoch_admm_rho',
          'epoch_admm_z_sparsity/dense/kernel'} <= tags
