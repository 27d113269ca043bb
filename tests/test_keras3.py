"""The public API on Keras 3 models (`import keras`, TensorFlow backend):
targets, attach_admm, AdmmCallback with ramps, stages and rounds, every
constraint, masked retraining, strip, `.keras` files and the progressive
driver (BackupAndRestore mid-ADMM: tests/test_callback.py, on both Kerases).
Expected values come from numpy, not the library.
"""

import dataclasses
import math
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import tf_admm
from tf_admm import allocations
from tf_admm import constraints
from tf_admm import dead_units
from tf_admm import macs
from tf_admm import progressive
from tf_admm import weights as weights_lib
from tf_admm.regularizer import AdmmSteps
from tests.conftest import file_bytes
from tests.test_constraints import _on_levels
from tests.test_projections import numpy_keep_top_k
from tests.test_projections import numpy_n_of_m

L = keras.layers


# Models and data: small, random, Keras 3.


def sequential(seed=0):
  """(8, 8, 4) -> conv (6, 6, 8) -> sep (4, 4, 8) -> flat (128) -> fc (4)."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((8, 8, 4)),
      L.Conv2D(8, 3, name='conv'),
      L.SeparableConv2D(8, 3, name='sep'),
      L.Flatten(name='flat'),
      L.Dense(4, name='fc'),
  ], name='seq')


def functional(seed=0):
  """Two convolution branches added; conv_b has an L2 of its own."""
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((8, 8, 4))
  a = L.Conv2D(8, 3, name='conv_a')(inputs)
  b = L.Conv2D(8, 3, name='conv_b',
               kernel_regularizer=keras.regularizers.L2(1e-3))(inputs)
  x = L.GlobalAveragePooling2D(name='pool')(L.Add(name='add')([a, b]))
  x = L.Dense(16, activation='relu', name='hidden')(x)
  return keras.Model(inputs, L.Dense(4, name='fc')(x), name='functional')


def nested(seed=0):
  """A functional model around a Sequential 'block' (with BatchNorm)."""
  keras.utils.set_random_seed(seed)
  block = keras.Sequential([
      L.Conv2D(8, 3, name='ic'),
      L.BatchNormalization(name='ibn'),
      L.Flatten(name='iflat'),
      L.Dense(16, name='id'),
  ], name='block')
  inputs = keras.Input((8, 8, 4))
  return keras.Model(inputs, L.Dense(4, name='out')(block(inputs)),
                     name='nested')


def tokens(seed=0):
  """12 int32 tokens of a vocabulary of 40 -> emb -> conv1d -> pool -> fc."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((12,), dtype='int32'),
      L.Embedding(40, 8, name='emb'),
      L.Conv1D(8, 3, name='c1'),
      L.GlobalAveragePooling1D(name='pool'),
      L.Dense(4, name='fc'),
  ], name='tokens')


def images(n=64, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 8, 8, 4)).astype(np.float32),
          rng.integers(0, 4, size=n))


def token_batch(n=64, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 40, size=(n, 12)).astype(np.int32),
          rng.integers(0, 4, size=n))


def compile_(model, learning_rate=1e-2, **kwargs):
  model.compile(keras.optimizers.Adam(learning_rate),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                **kwargs)
  return model


def kernels(model):
  """{weight path: value} of every prunable weight."""
  return {w.path: w.variable.numpy() for w in tf_admm.prunable_weights(model)}


def numpy_lamp_scores(values):
  """LAMP scores in numpy: each entry's square over the sum of the squares
  of its tensor's entries at least as large (LAMP, ICLR 2021)."""
  squares = np.square(values.astype(np.float64)).ravel()
  ascending = np.sort(squares)
  tails = np.cumsum(ascending[::-1])[::-1]  # sum of ascending[i:]
  return squares / tails[np.searchsorted(ascending, squares, side='left')]


def numpy_global_keep(model, rate, paths):
  """Keep counts of one LAMP-score threshold over the weights `paths`, in
  numpy: the largest round(total / rate) scores, wherever they are."""
  values = kernels(model)
  magnitudes = np.concatenate([numpy_lamp_scores(values[p]) for p in paths])
  owner = np.concatenate([np.full(values[p].size, i)
                          for i, p in enumerate(paths)])
  budget = int(round(magnitudes.size / rate))
  winners = owner[np.argsort(-magnitudes, kind='stable')[:budget]]
  counts = np.bincount(winners, minlength=len(paths))
  return {p: int(c) for p, c in zip(paths, counts)}


def ceil_keep(size, ratio):
  return max(1, math.ceil(size * ratio - 1e-9))


class HeldEveryStep(keras.callbacks.Callback):
  """Listed before AdmmCallback, so it sees each optimizer step's result
  before any prune: entries outside the mask are exactly 0, held entries
  exactly their held values."""

  def __init__(self):
    super().__init__()
    self.steps = 0
    self.most_pruned = 0  # so a check over nothing cannot pass unnoticed
    self.most_held = 0

  def on_train_batch_end(self, batch, logs=None):
    self.steps += 1
    for weight, regularizer in tf_admm.admm_weights(self.model):
      w = weight.variable.numpy()
      pruned = regularizer.mask.numpy() == 0
      assert not w[pruned].any(), (self.steps, weight.path)
      self.most_pruned = max(self.most_pruned, int(pruned.sum()))
      if regularizer.held is not None:
        held = regularizer.held.numpy() > 0
        np.testing.assert_array_equal(
            w[held], regularizer.held_values.numpy()[held],
            err_msg=f'step {self.steps} {weight.path}')
        self.most_held = max(self.most_held, int(held.sum()))


class MaskedEveryStep(keras.callbacks.Callback):
  """Masked retraining: entries outside `masks` exactly 0 after each step."""

  def __init__(self, masks):
    super().__init__()
    self.masks = masks
    self.steps = 0

  def on_train_batch_end(self, batch, logs=None):
    self.steps += 1
    values = kernels(self.model)
    for path, mask in self.masks.items():
      assert not values[path][~mask].any(), (self.steps, path)


# Targets over all kernels, zeros held after every step.


def _ramp():
  return tf_admm.PolynomialRamp(epochs=2, prune_every_steps=2,
                                lookahead_steps=2)


SIZES = {  # of each model's prunable weights, from their shapes
    'sequential': {'conv/kernel': 3 * 3 * 4 * 8, 'sep/depthwise_kernel': 72,
                   'sep/pointwise_kernel': 64, 'fc/kernel': 128 * 4},
    'functional': {'conv_a/kernel': 288, 'conv_b/kernel': 288,
                   'hidden/kernel': 8 * 16, 'fc/kernel': 16 * 4},
    'nested': {'block/ic/kernel': 288, 'block/id/kernel': 6 * 6 * 8 * 16,
               'out/kernel': 64},
    'tokens': {'emb/embeddings': 40 * 8, 'c1/kernel': 3 * 8 * 8,
               'fc/kernel': 8 * 4},
}


def _expected_keep(name, model):
  """{path: kept entries} of each case's targets, by numpy arithmetic."""
  sizes = SIZES[name]
  if name == 'sequential':  # conv by name, both sep kernels by class
    return {'conv/kernel': ceil_keep(288, 0.25),
            'sep/depthwise_kernel': ceil_keep(72, 0.5),
            'sep/pointwise_kernel': ceil_keep(64, 0.5),
            'fc/kernel': ceil_keep(512, 1 / 8)}
  if name == 'functional':  # fc by name, a global 4x over the rest
    rest = ['conv_a/kernel', 'conv_b/kernel', 'hidden/kernel']
    return dict(numpy_global_keep(model, 4, rest),
                **{'fc/kernel': ceil_keep(sizes['fc/kernel'], 0.5)})
  if name == 'nested':
    return numpy_global_keep(model, 5, list(sizes))
  return {'emb/embeddings': ceil_keep(320, 0.25),
          'c1/kernel': ceil_keep(192, 0.5), 'fc/kernel': ceil_keep(32, 0.5)}


CASES = {
    # name: (model, data, attach_admm's targets, schedule, stage rate)
    'sequential': (sequential, images, dict(per_layer={
        'conv': tf_admm.KeepRatio(0.25),
        L.SeparableConv2D: tf_admm.KeepRatio(0.5),
        'fc': tf_admm.CompressionRate(8)}), _ramp, None),
    'functional': (functional, images, dict(
        target=tf_admm.CompressionRate(4),
        per_layer={'fc': tf_admm.KeepRatio(0.5)}),
                   lambda: tf_admm.Stages(rates=[2], epochs_per_stage=1), 2),
    'nested': (nested, images, dict(target=tf_admm.CompressionRate(5)),
               _ramp, None),
    'tokens': (tokens, token_batch, dict(per_layer={
        'emb': tf_admm.Sparsity(0.75), 'c1': tf_admm.KeepRatio(0.5),
        L.Dense: tf_admm.CompressionRate(2)}),
               lambda: tf_admm.Stages(rates=[1.5], epochs_per_stage=1), 1.5),
}


@pytest.mark.parametrize('name', list(CASES))
def test_targets_are_reached_over_all_kernels_and_zeros_hold_every_step(
    name):
  make, data, targets, schedule, stage_rate = CASES[name]
  model = make()
  assert {p: v.size for p, v in kernels(model).items()} == SIZES[name]
  want = _expected_keep(name, model)
  assert want == tf_admm.keep_counts(model, **targets)
  admm = tf_admm.attach_admm(model, rho=0.01, **targets)
  assert {w.path: type(r) for w, r in tf_admm.admm_weights(admm)} == (
      dict.fromkeys(SIZES[name], tf_admm.Keras3AdmmRegularizer))
  # XLA, as Keras 3 picks on a GPU by itself, for one of them.
  compile_(admm, jit_compile=name == 'sequential')
  check, record = HeldEveryStep(), {}

  class AfterStageOne(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):  # after step 4's prune
      if int(self.model.optimizer.iterations.numpy()) == 4:
        record.update(kernels(self.model))

  x, y = data()
  admm.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
           callbacks=[check, tf_admm.AdmmCallback(schedule()),
                      AfterStageOne()])
  assert check.steps == 12 and check.most_pruned > 0
  total = sum(SIZES[name].values())
  pairs = tf_admm.admm_weights(admm)
  if stage_rate is None:  # a ramp hard-prunes to the targets at its end
    got = {w.path: np.count_nonzero(w.variable.numpy()) for w, _ in pairs}
    assert got == want
  else:
    # Stages: the stage's hard prune reached its rate over all kernels ...
    kept = sum(np.count_nonzero(v) for v in record.values())
    assert kept == pytest.approx(total / stage_rate, abs=len(want))
    # ... and the final stage's Z is at the targets, which the hard prune
    # of masked retraining applies.
    assert {w.path: np.count_nonzero(r.z.numpy()) for w, r in pairs} == want
    masks = tf_admm.masks_of(tf_admm.to_pruning_wrappers(admm))
    assert {p: int(m.sum()) for p, m in masks.items()} == want
    for weight, regularizer in pairs:  # within the stage's zeros
      assert not masks[weight.path][regularizer.mask.numpy() == 0].any()


# Every constraint: projections equal numpy's, levels held.


def _drive(admm, steps=4):
  """AdmmCallback by hand: begins ADMM, then one epoch of `steps` steps
  with a Z/U update at its end (Stages() updates every epoch)."""
  callback = tf_admm.AdmmCallback(tf_admm.Stages())
  callback.set_model(admm)
  callback.set_params({'steps': steps, 'epochs': 1})
  callback.on_train_begin()
  callback.on_train_batch_begin(0)
  return callback


def numpy_quantize(constraint, w):
  """Each output channel (or the tensor) rounded to its nearest level, in
  numpy: binary q = mean |w|; ternary q = the mean of the t largest |w|
  for the t that maximizes (their sum)^2 / t; uniform levels must be
  +-(1 .. 2^(bits-1)) q, and each entry goes to the nearest of them."""
  axis = constraint.axis
  moved = w[None] if axis is None else np.moveaxis(w, axis, 0)
  rows = moved.reshape(moved.shape[0], -1).astype(np.float64)
  fitted = constraint.fit_levels(w) if constraint.levels == 'uniform' else None
  out = np.empty_like(rows)
  for i, row in enumerate(rows):
    magnitudes = np.sort(np.abs(row))[::-1]
    if constraint.levels == 'binary':
      levels = np.array([-1.0, 1.0]) * magnitudes.mean()
    elif constraint.levels == 'ternary':
      t = np.argmax(np.cumsum(magnitudes)**2 /
                    np.arange(1, magnitudes.size + 1)) + 1
      levels = np.array([-1.0, 0.0, 1.0]) * magnitudes[:t].mean()
    else:
      codes = np.arange(1, 2**(constraint.bits - 1) + 1)
      levels = np.asarray(fitted[i], np.float64)
      q = levels.max() / codes[-1]
      np.testing.assert_allclose(levels, np.concatenate([-codes[::-1], codes])
                                 * q, rtol=1e-6)
    out[i] = levels[np.abs(row[:, None] - levels[None]).argmin(axis=1)]
  out = out.reshape(moved.shape)
  return (out[0] if axis is None else np.moveaxis(out, 0, axis)).astype(
      w.dtype)


def _reference(constraint, values):
  """The projection of `values`, from numpy."""
  if isinstance(constraint, constraints.KeepLargest):
    return numpy_keep_top_k(values, constraint.keep)[0]
  if isinstance(constraint, constraints.NOutOfM):
    return numpy_n_of_m(values, constraint.n, constraint.m, constraint.axis,
                        constraint.keep)[0]
  projected = numpy_quantize(constraint, values)
  assert _on_levels(constraint, np.ones(values.shape, bool), projected)
  return projected


def _assert_projected(got, want):
  # Levels are means, which numpy may sum in another order.
  np.testing.assert_array_equal(got == 0, want == 0)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


PER_LAYER = {'conv': tf_admm.KeepRatio(0.25), 'sep': tf_admm.KeepRatio(0.5),
             'fc': tf_admm.CompressionRate(8)}
KEEP = {'conv/kernel': 72, 'sep/depthwise_kernel': 36,
        'sep/pointwise_kernel': 32, 'fc/kernel': 64}
LEVELS = {'conv': tf_admm.Quantize('ternary'),
          'sep': tf_admm.Quantize('uniform', bits=3),
          'fc': tf_admm.Quantize('binary')}


@pytest.mark.parametrize('kind', ['keep_largest', '2_of_4', 'levels'])
def test_z_and_u_steps_match_numpy(kind):
  if kind == 'levels':
    admm = tf_admm.attach_admm(sequential(), constraint=LEVELS, rho=0.01)
  else:
    admm = tf_admm.attach_admm(
        sequential(), per_layer=PER_LAYER, rho=0.01,
        constraint=(constraints.NOutOfM(2, 4) if kind == '2_of_4' else
                    constraints.KeepLargest()))
  compile_(admm)
  pairs = tf_admm.admm_weights(admm)
  fitted = {w.path: r.constraint for w, r in pairs}
  if kind == '2_of_4':  # along each kernel's input axis; a depthwise kernel
    assert fitted == {  # has none, and falls back to its count
        'conv/kernel': constraints.NOutOfM(2, 4, -2, 72, PER_LAYER['conv']),
        'sep/depthwise_kernel': constraints.KeepLargest(36, PER_LAYER['sep']),
        'sep/pointwise_kernel': constraints.NOutOfM(2, 4, -2, 32,
                                                    PER_LAYER['sep']),
        'fc/kernel': constraints.NOutOfM(2, 4, 0, 64, PER_LAYER['fc'])}
  elif kind == 'keep_largest':
    assert {p: c.keep for p, c in fitted.items()} == KEEP
  else:  # per output channel; a depthwise kernel has one scale
    assert {p: c.axis for p, c in fitted.items()} == {
        'conv/kernel': -1, 'sep/depthwise_kernel': None,
        'sep/pointwise_kernel': -1, 'fc/kernel': -1}
  callback = _drive(admm)
  for weight, regularizer in pairs:  # begin: Z = Proj(W), U = 0
    _assert_projected(regularizer.z.numpy(), _reference(
        regularizer.constraint, weight.variable.numpy()))
    assert not regularizer.u.numpy().any()
  rng = np.random.default_rng(1)
  before = {}
  for weight, regularizer in pairs:  # as if W-steps had moved W and U
    weight.variable.assign(rng.normal(size=weight.shape).astype(np.float32))
    regularizer.u.assign((rng.normal(size=weight.shape) * 0.1)
                         .astype(np.float32))
    before[weight.path] = (weight.variable.numpy(), regularizer.u.numpy())
  for batch in range(4):  # the schedule counts the optimizer's steps
    callback.on_train_batch_begin(batch)
    admm.optimizer.iterations.assign_add(1)
    callback.on_train_batch_end(batch)
  for weight, regularizer in pairs:
    w, u = before[weight.path]
    z = _reference(regularizer.constraint, w + u)
    _assert_projected(regularizer.z.numpy(), z)
    np.testing.assert_allclose(regularizer.u.numpy(), u + w - z, atol=1e-6)
    if kind != 'levels':
      assert np.count_nonzero(z) == KEEP[weight.path]


def test_rounds_hold_every_kept_weight_on_its_level():
  # Uniform bits, ternary and binary; then an epoch with all of them held,
  # in which only the other parameters may move.
  admm = compile_(tf_admm.attach_admm(sequential(), constraint=LEVELS,
                                      rho=0.05))
  check = HeldEveryStep()
  x, y = images()
  admm.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
           callbacks=[check, tf_admm.AdmmCallback(tf_admm.Rounds(
               0.5, epochs_per_round=1, rho_growth=2.0))])
  assert check.steps == 12 and check.most_held > 0
  for weight, regularizer in tf_admm.admm_weights(admm):
    # The last hold restarted rho; the Z/U step after it (step 12) moved
    # nothing, so rho did not grow.
    assert float(regularizer.rho.numpy()) == pytest.approx(0.05)
    w, mask = weight.variable.numpy(), regularizer.mask.numpy() > 0
    np.testing.assert_array_equal(regularizer.held.numpy() > 0, mask)
    np.testing.assert_array_equal(w, regularizer.held_values.numpy())
    assert _on_levels(regularizer.constraint, mask, w), weight.path
    levels = regularizer.levels.numpy()  # on the regularizer's own levels
    axis = regularizer.constraint.axis
    rows = [w] if axis is None else list(np.moveaxis(w, axis, 0))
    for row, row_levels in zip(rows, levels):
      assert set(np.unique(row[row != 0])) <= set(row_levels), weight.path
    distinct = len(np.unique(w))
    assert distinct <= regularizer.constraint.level_count * len(rows)
  assert admm.get_layer('fc').bias.numpy().any()  # the rest did train


def test_after_the_rounds_rho_grows_no_more():
  # conv is quantized (held whole after the rounds), sep and fc only pruned:
  # after the last hold (step 8) no projection moves anything, so the Z/U
  # steps of the last epoch leave rho where the hold restarted it.
  admm = _mixed_admm()
  x, y = images()
  admm.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
           callbacks=[tf_admm.AdmmCallback(tf_admm.Rounds(
               0.5, epochs_per_round=1, update_every_steps=1,
               rho_growth=1.5))])
  for weight, regularizer in tf_admm.admm_weights(admm):
    assert float(regularizer.rho.numpy()) == pytest.approx(0.01), weight.path


def test_trained_scales_move_each_channel_on_one_grid():
  trained = {name: dataclasses.replace(c, train_scale=True)
             for name, c in LEVELS.items()}
  admm = compile_(tf_admm.attach_admm(sequential(), constraint=trained,
                                      rho=0.05))
  x, y = images()
  admm.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
           callbacks=[tf_admm.AdmmCallback(tf_admm.Rounds(
               1.0, epochs_per_round=1))])
  moved = 0
  for weight, regularizer in tf_admm.admm_weights(admm):
    w, values = weight.variable.numpy(), regularizer.held_values.numpy()
    mask = regularizer.mask.numpy() > 0
    np.testing.assert_array_equal(regularizer.held.numpy() > 0, mask)
    axis = regularizer.constraint.axis  # None: one scale (a depthwise one)
    channels = (lambda a: [a]) if axis is None else (
        lambda a: np.moveaxis(a, axis, 0))
    for row, row_values in zip(channels(w), channels(values)):
      scale = np.vdot(row, row_values) / np.vdot(row_values, row_values)
      np.testing.assert_allclose(row, scale * row_values, rtol=1e-5,
                                 atol=1e-7)
      moved += not np.allclose(scale, 1.0)
    assert _on_levels(regularizer.constraint, mask, w), weight.path
  assert moved > 0  # the scales trained in the epoch after the hold


# Masked retraining, strip.


@pytest.fixture(scope='module')
def trained_functional():
  """(the dense functional model, it after 2 epochs of one-shot ADMM, x)."""
  dense = functional()
  admm = compile_(tf_admm.attach_admm(dense, tf_admm.CompressionRate(4),
                                      rho=0.01))
  x, y = images()
  admm.fit(x, y, batch_size=16, epochs=2, verbose=0,
           callbacks=[tf_admm.AdmmCallback(tf_admm.Stages())])
  return dense, admm, x, y


def test_masked_retraining_holds_the_masks_exactly_and_survives_keras_files(
    trained_functional, tmp_path):
  _, admm, x, y = trained_functional
  trained = kernels(admm)
  want = {w.path: numpy_keep_top_k(trained[w.path], r.constraint.keep)[1]
          for w, r in tf_admm.admm_weights(admm)}
  wrapped = tf_admm.to_pruning_wrappers(admm)
  assert not any(isinstance(r, AdmmSteps)
                 for r in _regularizers(wrapped))  # the penalty is gone
  masks = tf_admm.masks_of(wrapped)
  assert sorted(masks) == sorted(want)
  for path, mask in want.items():
    np.testing.assert_array_equal(masks[path], mask)
    np.testing.assert_array_equal(kernels(wrapped)[path],
                                  np.where(mask, trained[path], 0))
  compile_(wrapped, 0.05)  # Adam's momentum would move pruned entries
  check = MaskedEveryStep(want)
  wrapped.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[check])
  assert check.steps == 8
  for path, value in kernels(wrapped).items():
    np.testing.assert_array_equal(value != 0, want[path])  # kept ones train
    assert not np.allclose(value[want[path]], trained[path][want[path]])
  np.testing.assert_array_equal(kernels(admm)['fc/kernel'],
                                trained['fc/kernel'])  # input untouched

  wrapped.save(tmp_path / 'wrapped.keras')
  loaded = keras.saving.load_model(tmp_path / 'wrapped.keras')
  assert int(loaded.optimizer.iterations.numpy()) == 8
  for path, mask in tf_admm.masks_of(loaded).items():
    np.testing.assert_array_equal(mask, want[path])
  check = MaskedEveryStep(want)
  loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[check])
  assert check.steps == 8
  for path, value in kernels(loaded).items():
    np.testing.assert_array_equal(value != 0, want[path])


def _regularizers(model):
  """Every regularizer of the model's prunable weights (None left out)."""
  return [w.regularizer for w in tf_admm.prunable_weights(model)
          if w.regularizer is not None]


def _check_plain(stripped, dense, reference, x):
  """`stripped` has no tf_admm regularizer or state, the dense model's
  variables, the prunable weights of `reference` and its predictions."""
  assert not any(isinstance(r, (AdmmSteps, tf_admm.HeldMask))
                 for r in _regularizers(stripped))
  assert [type(r) for r in _regularizers(stripped)] == [
      keras.regularizers.L2]  # conv_b's own, kept
  assert len(stripped.losses) == 1
  assert [v.path for v in stripped.weights] == [v.path for v in dense.weights]
  assert [w.shape for w in stripped.get_weights()] == [
      w.shape for w in dense.get_weights()]
  for path, value in kernels(reference).items():
    np.testing.assert_array_equal(kernels(stripped)[path], value)
  np.testing.assert_allclose(stripped.predict(x, verbose=0),
                             reference.predict(x, verbose=0), rtol=1e-6,
                             atol=1e-7)


def test_remove_admm_and_strip_pruning_leave_the_plain_model(
    trained_functional):
  dense, admm, x, y = trained_functional
  # The ADMM state counts among the ADMM model's weights, not the plain one's.
  assert len(admm.get_weights()) > len(dense.get_weights())
  _check_plain(tf_admm.remove_admm(admm), dense, admm, x)
  wrapped = compile_(tf_admm.to_pruning_wrappers(admm), 0.05)
  wrapped.fit(x, y, batch_size=16, epochs=1, verbose=0)
  assert len(wrapped.get_weights()) > len(dense.get_weights())  # the masks
  stripped = tf_admm.strip_pruning(wrapped)
  _check_plain(stripped, dense, wrapped, x)
  masks = tf_admm.masks_of(wrapped)
  for path, value in kernels(stripped).items():
    np.testing.assert_array_equal(value != 0, masks[path])


# `.keras` files and BackupAndRestore mid-ADMM.


def _mixed_admm(seed=0):
  """Quantized and pruned conv, 2:4 sep, pruned fc: every kind of state."""
  return compile_(tf_admm.attach_admm(
      sequential(seed), per_layer=PER_LAYER, rho=0.01,
      constraint={'conv': tf_admm.Quantize('ternary'),
                  'sep': constraints.NOutOfM(2, 4),
                  'fc': constraints.KeepLargest()}))


STATE = ('z', 'u', 'rho', 'mask', 'start_step', 'start_nonzeros', 'last_step',
         'levels', 'held', 'held_values')


def test_keras_file_mid_admm_keeps_the_state_and_the_schedule_goes_on(
    tmp_path):
  x, y = images()
  # Rounds of 6 steps with a Z/U update at every step: after 8 steps (two
  # epochs) the first round has held half the weights, and U and rho have
  # moved since.
  def schedule():
    return tf_admm.Rounds(0.5, epochs_per_round=1.5, update_every_steps=1,
                          rho_growth=1.5)

  admm = _mixed_admm()
  with pytest.warns(tf_admm.ScheduleNotFinished, match='8 steps into'):
    admm.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
             callbacks=[tf_admm.AdmmCallback(schedule())])
  admm.save(tmp_path / 'admm.keras')
  loaded = keras.saving.load_model(tmp_path / 'admm.keras')
  assert int(loaded.optimizer.iterations.numpy()) == 8
  saved, got = tf_admm.admm_weights(admm), tf_admm.admm_weights(loaded)
  assert [w.path for w, _ in got] == [w.path for w, _ in saved]
  for (weight, before), (loaded_weight, after) in zip(saved, got):
    assert after.constraint == before.constraint
    assert after.initial_rho == before.initial_rho == 0.01
    np.testing.assert_array_equal(loaded_weight.variable.numpy(),
                                  weight.variable.numpy())
    for name in STATE:
      if getattr(before, name) is None:
        assert getattr(after, name) is None, name
        continue
      np.testing.assert_array_equal(getattr(after, name).numpy(),
                                    getattr(before, name).numpy(),
                                    err_msg=f'{weight.path} {name}')
  conv = [r for w, r in got if w.path == 'conv/kernel'][0]
  assert 0 < np.count_nonzero(conv.held.numpy()) < np.count_nonzero(
      conv.mask.numpy())  # mid-rounds
  assert float(conv.rho.numpy()) == pytest.approx(0.01 * 1.5**2)
  assert conv.u.numpy().any()
  np.testing.assert_allclose(loaded.predict(x[:8], verbose=0),
                             admm.predict(x[:8], verbose=0), rtol=1e-6)

  # The loaded model finishes the schedule from step 8: the second round
  # ends at step 12 with every kept weight held and every count reached.
  check = HeldEveryStep()
  with warnings.catch_warnings():
    warnings.simplefilter('error', tf_admm.ScheduleNotFinished)
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
               callbacks=[check, tf_admm.AdmmCallback(schedule())])
  assert check.steps == 4 and check.most_held > 0
  assert int(loaded.optimizer.iterations.numpy()) == 12
  for weight, regularizer in got:
    assert int(regularizer.start_step.numpy()) == 0  # not begun again
    kernel = weight.variable.numpy()
    assert np.count_nonzero(regularizer.mask.numpy()) == KEEP[weight.path]
    assert not kernel[regularizer.mask.numpy() == 0].any()
  np.testing.assert_array_equal(conv.held.numpy(), conv.mask.numpy())
  sep = [w.variable.numpy() for w, _ in got
         if w.path == 'sep/pointwise_kernel'][0]
  groups = np.count_nonzero(np.moveaxis(sep, -2, -1).reshape(-1, 4), axis=-1)
  assert groups.max() <= 2  # 2:4 along the input channels


# The progressive driver.


def _progressive(output_dir):
  x, y = images(256)
  data = progressive.Data(x[:192], y[:192], x[192:], y[192:], x[192:],
                          y[192:])
  settings = progressive.Settings(stage_rates=[2.0, 4.0], pretrain_epochs=1,
                                  admm_epochs=1, retrain_epochs=1,
                                  prune_every_steps=2, lookahead_steps=2,
                                  batch_size=32)
  return progressive.ProgressiveRun(sequential, data,
                                    allocations.global_allocation(4.0),
                                    settings, str(output_dir),
                                    log=lambda line: None)


def test_progressive_run_on_a_keras3_model_reaches_its_rates_and_resumes(
    tmp_path, monkeypatch):
  folder = tmp_path / 'run'
  summary = _progressive(folder).run()
  final = summary['final_model']
  assert isinstance(final, keras.Model)  # Keras 3, not tf_keras
  values = kernels(final)
  total = sum(SIZES['sequential'].values())
  assert sum(v.size for v in values.values()) == total
  # The rates, counted here from the weights.
  assert total / sum(np.count_nonzero(v) for v in values.values()) == (
      pytest.approx(4.0, rel=0.01))
  assert [s['rate'] for s in summary['stages']] == pytest.approx([2.0, 4.0],
                                                                 rel=0.01)
  first = np.load(folder / 'candidates' / 's00_c0' / 'masks.npz')
  masks = summary['final_masks']
  assert sorted(masks) == sorted(values)
  for path, value in values.items():
    np.testing.assert_array_equal(value != 0, masks[path])  # retrained
    assert not masks[path][~first[path]].any()  # stage 2 within stage 1
  assert sum(first[p].sum() for p in first.files) == pytest.approx(
      total / 2, rel=0.01)

  # Resuming the finished run trains nothing and writes nothing.
  before = file_bytes(folder)

  def no_training(*args, **kwargs):
    raise AssertionError('a finished run trained again')

  monkeypatch.setattr(keras.Model, 'fit', no_training)
  again = _progressive(folder).run()
  assert file_bytes(folder) == before
  for path, value in kernels(again['final_model']).items():
    np.testing.assert_array_equal(value, values[path])


# A program that uses Keras 3 only, and clear refusals.


PROGRAM = '''
import os, sys
import numpy as np
import keras
import tf_admm
import tensorflow as tf
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="a"),
                          keras.layers.Dense(3, name="b")])
x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
y = np.arange(32) % 3
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
admm = tf_admm.attach_admm(model, tf_admm.CompressionRate(4))
admm.compile("adam", loss)
admm.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[
    tf_admm.AdmmCallback(tf_admm.PolynomialRamp(epochs=1,
                                                prune_every_steps=2))])
wrapped = tf_admm.to_pruning_wrappers(admm)
wrapped.compile("adam", loss)
wrapped.fit(x, y, epochs=1, batch_size=8, verbose=0)
plain = tf_admm.strip_pruning(wrapped)
kept = sum(int(np.count_nonzero(plain.get_layer(name).kernel.numpy()))
           for name in ("a", "b"))
print(keras.__version__.split(".")[0], tf.keras.__version__.split(".")[0],
      "tensorflow_model_optimization" in sys.modules,
      os.environ.get("TF_USE_LEGACY_KERAS"), kept)
'''


def test_a_keras3_program_runs_without_tfmot_and_stays_on_keras3():
  # A fresh program: this process may have imported tfmot, which sets
  # TF_USE_LEGACY_KERAS.
  env = {k: v for k, v in os.environ.items() if k != 'TF_USE_LEGACY_KERAS'}
  result = subprocess.run([sys.executable, '-c', PROGRAM], capture_output=True,
                          text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  # 48 + 24 kernel entries at 4x keep 18.
  assert result.stdout.split() == ['3', '3', 'False', 'None',
                                   str(round((6 * 8 + 8 * 3) / 4))]


def test_unsupported_keras3_models_and_plain_models_are_refused():

  class Subclassed(keras.Model):

    def __init__(self):
      super().__init__()
      self.dense = L.Dense(3)

    def call(self, x):
      return self.dense(x)

  subclassed = Subclassed()
  subclassed(np.zeros((1, 4), np.float32))
  with pytest.raises(ValueError, match='is a subclassed model.*functional'):
    tf_admm.attach_admm(subclassed, tf_admm.Sparsity(0.5))
  inputs = keras.Input((4,))  # one nested inside a functional model too
  outer = keras.Model(inputs, L.Dense(2)(Subclassed()(inputs)))
  with pytest.raises(ValueError, match='subclassed'):
    tf_admm.attach_admm(outer, tf_admm.Sparsity(0.5))
  plain = compile_(sequential())
  with pytest.raises(ValueError, match='no ADMM regularizer.*attach_admm'):
    plain.fit(*images(16), epochs=1, verbose=0,
              callbacks=[tf_admm.AdmmCallback(tf_admm.Stages())])
  assert int(plain.optimizer.iterations.numpy()) == 0  # refused before a step


def test_a_backend_other_than_tensorflow_is_refused_naming_the_fix(
    monkeypatch):
  model = sequential()
  # jax is not installed here: make Keras report it as its backend.
  monkeypatch.setattr(keras.backend, 'backend', lambda: 'jax')
  with pytest.raises(ValueError, match="uses 'jax'.*KERAS_BACKEND=tensorflow"):
    tf_admm.attach_admm(model, tf_admm.CompressionRate(2))
  with pytest.raises(ValueError, match='KERAS_BACKEND=tensorflow'):
    tf_admm.keep_counts(model, tf_admm.CompressionRate(2))


# Layers and settings beyond the four models.


def test_layers_with_inner_weights_and_shared_layers_keep_their_weights():
  # An LSTM keeps its weights in its cell, a sub-layer; 'shared' is called
  # twice. Attaching, removing and masking must copy every weight.
  keras.utils.set_random_seed(0)
  inputs = keras.Input((6, 4))
  shared = L.Dense(8, name='shared')
  x = L.LSTM(8, return_sequences=True, name='lstm')(shared(inputs))
  x = shared(L.Dense(4, name='back')(x))
  model = keras.Model(inputs, L.Dense(3, name='out')(L.Flatten()(x)))
  x = np.random.default_rng(0).normal(size=(16, 6, 4)).astype(np.float32)
  y = np.random.default_rng(1).integers(0, 3, size=16)
  expected = model.predict(x, verbose=0)
  admm = tf_admm.attach_admm(model, tf_admm.CompressionRate(2))
  np.testing.assert_allclose(admm.predict(x, verbose=0), expected, atol=1e-6)
  np.testing.assert_allclose(tf_admm.remove_admm(admm).predict(x, verbose=0),
                             expected, atol=1e-6)
  assert len(admm.get_layer('shared')._inbound_nodes) == 2  # still shared
  compile_(admm).fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[
      tf_admm.AdmmCallback(tf_admm.PolynomialRamp(epochs=1,
                                                  prune_every_steps=1,
                                                  lookahead_steps=1))])
  held = tf_admm.to_pruning_wrappers(admm)
  trained = tf_admm.remove_admm(admm)
  kept = tf_admm.masks_of(held)
  for weight in tf_admm.prunable_weights(trained):
    np.testing.assert_array_equal(weight.variable.numpy() != 0,
                                  kept[weight.path])
  np.testing.assert_allclose(held.predict(x, verbose=0),
                             trained.predict(x, verbose=0), atol=1e-6)


def test_mixed_precision_holds_masks_and_reaches_the_targets():
  keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    admm = compile_(tf_admm.attach_admm(sequential(), tf_admm.KeepRatio(0.25)))
  finally:
    keras.mixed_precision.set_global_policy('float32')
  x, y = images(64)
  seen = []

  class Check(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      for weight, regularizer in tf_admm.admm_weights(self.model):
        assert not weight.variable.numpy()[regularizer.mask.numpy() == 0].any()
      seen.append(int(self.model.optimizer.iterations.numpy()))

  # The ramp takes the first 8 of 24 batches: room for steps that loss
  # scaling skips (Keras 3 then leaves the optimizer's step count alone).
  admm.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[
      Check(), tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
          epochs=1, prune_every_steps=2, lookahead_steps=2))])
  assert admm.get_layer('conv').compute_dtype == 'float16'
  assert seen[-1] >= 8 and seen == sorted(seen)
  # What the global target allocates to each kernel of the float32 model.
  wanted = tf_admm.keep_counts(sequential(), tf_admm.KeepRatio(0.25))
  for weight, regularizer in tf_admm.admm_weights(admm):
    assert np.count_nonzero(regularizer.mask.numpy()) == wanted[weight.path]


def test_keras3_models_get_the_same_reports_and_refusals():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((6,)),
                            L.Dense(5, activation='relu', name='a'),
                            L.Dense(3, name='b')])
  masks = {'a/kernel': np.ones((6, 5)), 'b/kernel': np.ones((5, 3))}
  masks['a/kernel'][:, 1] = 0  # unit 1 of 'a' has no input: dead
  held = tf_admm.to_pruning_wrappers(model, masks)
  x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
  expected = held.predict(x, verbose=0)
  removed = dead_units.remove_dead_units(held)
  assert removed['a']['dead'] == 1
  np.testing.assert_allclose(held.predict(x, verbose=0), expected, atol=1e-6)
  # The masks' variables are no weights of the model's layers.
  admm = tf_admm.attach_admm(model, tf_admm.CompressionRate(2))
  assert [u['path'] for u in weights_lib.unpruned_weights(
      admm, ['a/kernel', 'b/kernel'])] == ['a/bias', 'b/bias']
  assert macs.model_macs(model) == {'total': 6 * 5 + 5 * 3,
                                    'layers': {'a': 30, 'b': 15}}
  with pytest.raises(ValueError, match='call tf_admm.strip_pruning first'):
    tf_admm.attach_admm(held, tf_admm.CompressionRate(2))
  adam = keras.optimizers.Adam(gradient_accumulation_steps=2)
  admm.compile(adam, 'mse')
  with pytest.raises(ValueError, match='gradient_accumulation_steps'):
    admm.fit(x, np.zeros((8, 3)), verbose=0, callbacks=[
        tf_admm.AdmmCallback(tf_admm.Stages())])
