import warnings

import numpy as np
import pytest
import tensorflow as tf

import tf_admm
from tf_admm.constraints import KeepLargest
from tf_admm.keras_compat import keras
from tests.test_projections import numpy_keep_top_k


def _regularizer(shape, keep, rho=1e-2, seed=0):
  """A built regularizer on a random weight of `shape`, with its weight."""
  weight = tf.Variable(np.random.default_rng(seed).normal(size=shape)
                       .astype(np.float32))
  regularizer = tf_admm.AdmmRegularizer(KeepLargest(keep), rho)
  regularizer.prepare(weight)
  return regularizer, weight


def _set_state(regularizer, shape, seed):
  rng = np.random.default_rng(seed)
  z, u = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
  regularizer.z.assign(z)
  regularizer.u.assign(u)
  return z, u


@pytest.mark.parametrize('shape', [(5,), (5, 5, 1, 20), (30, 7)])
@pytest.mark.parametrize('rho', [1e-4, 3e-3, 2.0])
def test_penalty_and_gradient_match_numpy(shape, rho):
  regularizer, weight = _regularizer(shape, keep=1, rho=rho)
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
  regularizer = tf_admm.AdmmRegularizer(KeepLargest(1), 0.5,
                                        base=keras.regularizers.L2(0.1))
  assert float(regularizer(weight)) == pytest.approx(0.5 / 2 * 6 + 0.1 * 6)


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match='rho'):
    tf_admm.AdmmRegularizer(KeepLargest(1), 0.0)
  with pytest.raises(ValueError, match='expected a tf_admm constraint'):
    tf_admm.AdmmRegularizer(0.01)


def test_config_round_trip_keeps_the_constraint():
  constraint = KeepLargest(7, target=tf_admm.CompressionRate(10))
  regularizer = tf_admm.AdmmRegularizer(constraint, 0.02, base='l2')
  clone = tf_admm.AdmmRegularizer.from_config(regularizer.get_config())
  assert clone.constraint == constraint and clone.initial_rho == 0.02
  assert clone.get_config() == regularizer.get_config()
  restored = keras.regularizers.deserialize(
      keras.regularizers.serialize(regularizer))
  assert isinstance(restored, tf_admm.AdmmRegularizer)
  assert restored.constraint == constraint


def test_restart_update_and_hard_project_match_numpy():
  regularizer, weight = _regularizer((6, 5), keep=8, rho=0.1)
  regularizer.begin(step=3)
  assert int(regularizer.start_step) == 3
  assert int(regularizer.start_nonzeros) == 30
  regularizer.restart(weight, progress=1.0)
  np.testing.assert_array_equal(regularizer.z.numpy(),
                                numpy_keep_top_k(weight.numpy(), 8)[0])
  assert not regularizer.u.numpy().any()

  rng = np.random.default_rng(1)
  w = rng.normal(size=(6, 5)).astype(np.float32)
  u = (rng.normal(size=(6, 5)) * 0.1).astype(np.float32)
  z_old = regularizer.z.numpy()
  weight.assign(w)
  regularizer.u.assign(u)
  regularizer.update(weight, progress=1.0, rho_growth=1.5)
  z = numpy_keep_top_k(w + u, 8)[0]
  np.testing.assert_array_equal(regularizer.z.numpy(), z)
  np.testing.assert_allclose(regularizer.u.numpy(), u + w - z, atol=1e-6)
  assert float(regularizer.rho) == pytest.approx(0.15)
  assert regularizer.z_change == pytest.approx(np.linalg.norm(z - z_old),
                                               rel=1e-5)

  regularizer.hard_project(weight, progress=1.0)
  want_values, want_mask = numpy_keep_top_k(w, 8)
  np.testing.assert_array_equal(weight.numpy(), want_values)
  np.testing.assert_array_equal(regularizer.mask.numpy(), want_mask)
  z_change = regularizer.z_change
  regularizer.restart(weight, progress=1.0)
  assert float(regularizer.rho) == pytest.approx(0.1)
  # The metrics still describe the last Z/U step.
  assert regularizer.measure(weight)['rho'] == pytest.approx(0.15)
  assert regularizer.z_change == z_change

  # Pruned to its count, the weight is its own projection: a Z/U step moves
  # nothing, and rho stays.
  weight.assign(want_values * 1.5)
  regularizer.update(weight, progress=1.0, rho_growth=1.5)
  np.testing.assert_array_equal(regularizer.z.numpy(), want_values * 1.5)
  assert not regularizer.u.numpy().any()
  assert float(regularizer.rho) == pytest.approx(0.1)


def test_progress_moves_the_count_from_the_start_to_the_target():
  regularizer, weight = _regularizer((10, 10), keep=20)
  mask = np.ones((10, 10), np.float32)
  mask[:4] = 0  # an earlier prune left 60 entries
  regularizer.mask.assign(mask)
  regularizer.begin(step=0)
  assert [regularizer.constraint_at(p).keep
          for p in (0.0, 0.25, 0.5, 1.0, 1.2)] == [60, 50, 40, 20, 20]
  projection = regularizer.project(weight.numpy(), progress=0.5)
  np.testing.assert_array_equal(
      projection.mask, numpy_keep_top_k(weight.numpy(), 40, mask > 0)[1])


def test_the_mask_holds_through_optimizer_steps():
  regularizer, weight = _regularizer((4, 4), keep=4)
  regularizer.hard_project(weight, progress=1.0)
  zeros = weight.numpy() == 0
  optimizer = keras.optimizers.Adam(0.5)
  for _ in range(3):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum((weight - 1.0)**2)
    optimizer.apply_gradients([(tape.gradient(loss, weight), weight)])
    assert not weight.numpy()[zeros].any()
  assert (weight.numpy()[~zeros] != 0).all()


def test_state_survives_a_checkpoint_round_trip(tmp_path):
  regularizer, _ = _regularizer((3, 4), keep=5)
  z, u = _set_state(regularizer, (3, 4), seed=3)
  regularizer.rho.assign(0.7)
  regularizer.mask.assign(np.eye(3, 4, dtype=np.float32))
  regularizer.begin(step=11)
  path = tf.train.Checkpoint(admm=regularizer).save(str(tmp_path / 'ckpt'))

  fresh, _ = _regularizer((3, 4), keep=5, seed=1)
  tf.train.Checkpoint(admm=fresh).restore(path).assert_consumed()
  np.testing.assert_array_equal(fresh.z.numpy(), z)
  np.testing.assert_array_equal(fresh.u.numpy(), u)
  np.testing.assert_array_equal(fresh.mask.numpy(), np.eye(3, 4))
  assert float(fresh.rho) == pytest.approx(0.7)
  assert fresh.started and int(fresh.start_step) == 11
  assert int(fresh.start_nonzeros) == 3


def _quantizing(shape, seed=0, **kwargs):
  weight = tf.Variable(np.random.default_rng(seed).normal(size=shape)
                       .astype(np.float32))
  regularizer = tf_admm.AdmmRegularizer(
      tf_admm.Quantize(**{'axis': -1, **kwargs}), rho=1e-2)
  regularizer.prepare(weight)
  return regularizer, weight


def test_hard_projection_holds_the_nearest_share_on_fixed_levels():
  regularizer, weight = _quantizing((20, 5), levels='uniform', bits=2)
  w = weight.numpy()
  levels = regularizer.constraint.fit_levels(w)
  on_levels = regularizer.constraint.project(w, levels=levels).values
  regularizer.hard_project(weight, progress=0.3)
  held = regularizer.held.numpy() > 0
  assert held.sum() == 30
  # The held entries are the 30 nearest their levels, and sit on them.
  distance = np.abs(w - on_levels).ravel()
  assert distance[held.ravel()].max() <= np.sort(distance)[29]
  np.testing.assert_array_equal(weight.numpy()[held], on_levels[held])
  np.testing.assert_array_equal(weight.numpy()[~held], w[~held])
  np.testing.assert_allclose(regularizer.levels.numpy(), levels)
  # Later projections round to the held levels, even after W moves.
  weight.assign(w * 3)
  regularizer.hard_project(weight, progress=1.0)
  assert (regularizer.held.numpy() > 0).all()
  np.testing.assert_allclose(regularizer.levels.numpy(), levels)
  np.testing.assert_array_equal(weight.numpy()[held], on_levels[held])
  for row in range(5):
    assert set(np.unique(weight.numpy()[:, row])) <= set(
        levels[row].astype(np.float32))


def test_held_levels_survive_optimizer_steps_and_pruned_entries_stay_zero():
  regularizer, weight = _quantizing((6, 4), levels='ternary', keep=12)
  regularizer.hard_project(weight, progress=1.0)
  before = weight.numpy().copy()
  assert np.count_nonzero(regularizer.mask.numpy()) == 12
  optimizer = keras.optimizers.Adam(0.5)
  for _ in range(3):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum((weight - 1.0)**2)
    optimizer.apply_gradients([(tape.gradient(loss, weight), weight)])
    np.testing.assert_array_equal(weight.numpy(), before)


@pytest.mark.parametrize('per_channel', [True, False])
def test_trained_scales_keep_the_codes_and_move_each_channel_together(
    per_channel):
  regularizer, weight = _quantizing((6, 4), levels='uniform', bits=2,
                                    keep=16, train_scale=True,
                                    axis=-1 if per_channel else None)
  regularizer.hard_project(weight, progress=1.0)
  held_values = regularizer.held_values.numpy()
  kept = regularizer.mask.numpy() > 0
  target = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
  optimizer = keras.optimizers.Adam(0.05)
  for _ in range(20):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum((weight - target)**2)
    optimizer.apply_gradients([(tape.gradient(loss, weight), weight)])
  w = weight.numpy()
  assert not w[~kept].any()
  # Each channel (every entry, per layer) is held_values times one scale,
  # which has moved toward the least-squares fit to the target.
  columns = range(4) if per_channel else [slice(None)]
  for column in columns:
    v, got = held_values[:, column], w[:, column]
    scale = np.dot(got.ravel(), v.ravel()) / np.dot(v.ravel(), v.ravel())
    np.testing.assert_allclose(got, scale * v, rtol=1e-5, atol=1e-7)
    assert scale != pytest.approx(1.0)
    best = np.dot(target[:, column].ravel(), v.ravel()) / np.dot(
        v.ravel(), v.ravel())
    assert abs(scale - best) < abs(1.0 - best)


@pytest.mark.parametrize('train_scale', [True, False])
def test_with_every_weight_held_a_trained_scale_turns_the_penalty_off(
    train_scale):
  regularizer, weight = _quantizing((6, 4), levels='binary',
                                    train_scale=train_scale)
  regularizer.hard_project(weight, progress=1.0)
  regularizer.restart(weight, progress=1.0)
  weight.assign(weight.numpy() * 1.5)  # the scales moved
  regularizer.update(weight, progress=1.0, rho_growth=1.5)
  if train_scale:  # nothing left for ADMM: no pull back to the old levels
    assert float(regularizer.rho) == 0.0
    np.testing.assert_array_equal(regularizer.z.numpy(), weight.numpy())
    assert not regularizer.u.numpy().any()
    assert float(regularizer(weight)) == 0.0
  else:
    assert float(regularizer.rho) == pytest.approx(1.5e-2)


def test_a_later_hold_keeps_the_scale_a_held_channel_trained():
  regularizer, weight = _quantizing((4, 3), levels='uniform', bits=2,
                                    train_scale=True)
  regularizer.hard_project(weight, progress=0.5)
  held = regularizer.held.numpy() > 0
  trained = np.where(held, regularizer.held_values.numpy() * 1.25,
                     weight.numpy())
  weight.assign(trained)
  regularizer.hard_project(weight, progress=1.0)
  np.testing.assert_array_equal(weight.numpy()[held], trained[held])
  np.testing.assert_array_equal(regularizer.held_values.numpy()[held],
                                trained[held])


def test_held_state_survives_a_checkpoint_round_trip(tmp_path):
  regularizer, weight = _quantizing((8, 3), levels='kmeans', bits=2)
  regularizer.hard_project(weight, progress=0.5)
  path = tf.train.Checkpoint(admm=regularizer).save(str(tmp_path / 'ckpt'))
  fresh, _ = _quantizing((8, 3), seed=1, levels='kmeans', bits=2)
  tf.train.Checkpoint(admm=fresh).restore(path).assert_consumed()
  for name in ('levels', 'held', 'held_values', 'mask'):
    np.testing.assert_array_equal(getattr(fresh, name).numpy(),
                                  getattr(regularizer, name).numpy())
  assert fresh.levels_held


@pytest.mark.parametrize('keras_version', [2, 3])
def test_a_fit_without_admm_callback_warns_at_its_first_batch(keras_version):
  from tests.conftest import random_batch, small_model  # pylint: disable=g-import-not-at-top
  any_keras = tf_admm.keras_compat.keras_module(keras_version)
  x, y = random_batch(32)

  def fit(callbacks):
    model = tf_admm.attach_admm(small_model(keras=any_keras),
                                tf_admm.KeepRatio(0.5))
    model.compile('sgd', 'sparse_categorical_crossentropy')
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      model.fit(x, y, epochs=2, verbose=0, callbacks=callbacks)
    return [str(w.message) for w in caught if 'ADMM penalty' in str(w.message)]

  unstarted = fit([])
  assert len(unstarted) == 2  # once per weight, not per step
  assert 'conv/kernel is computed before ADMM started (Z = U = 0)' in (
      unstarted[0])
  assert not fit([tf_admm.AdmmCallback(tf_admm.Stages(update_every_steps=1))])


def test_keras3_shape_tracing_under_a_strategy_does_not_warn():
  # Keras 3's fit traces shapes first under a tf.distribute strategy, before
  # any callback runs: that is no fit without AdmmCallback.
  from tests.conftest import random_batch, small_model  # pylint: disable=g-import-not-at-top
  keras3 = tf_admm.keras_compat.keras3
  x, y = random_batch(32)
  with tf.distribute.OneDeviceStrategy('/cpu:0').scope():
    model = tf_admm.attach_admm(small_model(keras=keras3),
                                tf_admm.KeepRatio(0.5))
    model.compile('sgd', 'sparse_categorical_crossentropy')
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    model.fit(x, y, epochs=1, verbose=0, callbacks=[
        tf_admm.AdmmCallback(tf_admm.Stages(update_every_steps=1))])
  assert not [w for w in caught if 'ADMM penalty' in str(w.message)]
