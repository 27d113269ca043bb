"""The contract every constraint class must pass, and KeepLargest's own tests.

A new constraint class is one more entry in CASES: how to make one for a
shape, which supports its set admits (written here, independently of the
library), and the shapes to test it on.
"""

import dataclasses
import functools
import json
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pytest

import tf_admm
from tf_admm import constraints
from tf_admm import keras_compat
from tf_admm import levels
from tf_admm import projections
from tf_admm.keras_compat import keras
from tests.conftest import separable_cnn, small_model
from tests.test_projections import numpy_keep_top_k


class Case(NamedTuple):
  # (shape, keep) -> a constraint for a weight of that shape keeping at most
  # `keep` entries; `keep` never exceeds the entries allowed.
  make: Callable[[tuple, int], constraints.Constraint]
  # (constraint, support, values) -> whether the bool array `support` with
  # `values` on it is a point of the constraint's set (the allowed mask is
  # checked separately).
  feasible: Callable[[constraints.Constraint, np.ndarray, np.ndarray], bool]
  shapes: Sequence[tuple]  # shapes to test on
  tiny_shapes: Sequence[tuple]  # at most 10 entries each, for brute force
  # Whether the projection moves kept entries (onto levels) instead of
  # keeping them as they are.
  moves_values: bool = False


def _keep_largest_feasible(constraint, support, values=None):
  return np.count_nonzero(support) <= constraint.keep


def _pattern_axis(shape, m):
  """The last axis whose length is a multiple of m."""
  return max(i for i, n in enumerate(shape) if n % m == 0)


def _n_of_m_feasible(constraint, support, values=None):
  groups = np.moveaxis(support, constraint.axis, -1).reshape(-1, constraint.m)
  return (groups.sum(-1) <= constraint.n).all() and (
      constraint.keep is None or support.sum() <= constraint.keep)


def _n_of_m_case(n, m):
  return Case(
      make=lambda shape, keep: constraints.NOutOfM(
          n, m, axis=_pattern_axis(shape, m), keep=keep),
      feasible=_n_of_m_feasible,
      shapes=[(m,), (3 * m, 5), (3, 3, m, 2), (2, 2 * m)],
      tiny_shapes=[(m,), (2, m), (m, 2)] if m <= 5 else [(m,)])


def _on_levels(constraint, support, values):
  """Each row (output channel, or the whole tensor) takes few values: at
  most the level count, and for uniform kinds integer multiples of one q
  within the codes (0 only where ternary allows it)."""
  if constraint.keep is not None and support.sum() > constraint.keep:
    return False
  if np.any(values[~support]):
    return False
  axis = constraint.axis
  rows = [values] if axis is None else list(np.moveaxis(values, axis, 0))
  masks = [support] if axis is None else list(np.moveaxis(support, axis, 0))
  for row, mask in zip(rows, masks):
    kept = row[mask].astype(np.float64)
    if len(np.unique(kept)) > constraint.level_count:
      return False
    if constraint.levels == 'kmeans' or not np.any(kept):
      continue
    codes = np.array(constraint.codes)
    top = np.abs(kept).max()
    # Some q = top / c puts every |value| on a code.
    if not any(np.all(np.isin(np.round(np.abs(kept) / (top / c)), codes) &
                      np.isclose(np.abs(kept) / (top / c),
                                 np.round(np.abs(kept) / (top / c)),
                                 atol=1e-5))
               for c in codes if c > 0):
      return False
  return True


def _levels_case(make):
  return Case(make=make, feasible=_on_levels,
              shapes=[(1,), (7,), (12, 5), (3, 3, 2, 4)],
              tiny_shapes=[], moves_values=True)


def _quantize(shape, keep, **kwargs):
  """Per channel along the last axis, as for a Dense or Conv kernel."""
  return constraints.Quantize(axis=-1 if len(shape) > 1 else None, keep=keep,
                              **kwargs)


LEVEL_CASES = [
    pytest.param(_levels_case(functools.partial(_quantize, levels='uniform',
                                                bits=bits)),
                 id=f'uniform_{bits}bit') for bits in (1, 2, 3)
] + [
    pytest.param(_levels_case(functools.partial(_quantize, levels=kind)),
                 id=kind) for kind in ('ternary', 'binary')
] + [
    pytest.param(_levels_case(functools.partial(_quantize, levels='kmeans',
                                                bits=2)), id='kmeans_2bit'),
    pytest.param(_levels_case(lambda shape, keep: constraints.Quantize(
        levels='uniform', bits=2, per_channel=False, keep=keep)),
                 id='uniform_2bit_per_tensor'),
    # The projection ignores train_scale; this case adds its config round
    # trips.
    pytest.param(_levels_case(functools.partial(_quantize, levels='binary',
                                                train_scale=True)),
                 id='binary_trained_scale'),
]

def _channels_feasible(constraint, support, values=None):
  channels = np.moveaxis(support, constraint.axis, 0).reshape(
      support.shape[constraint.axis], -1)
  return np.count_nonzero(channels.any(axis=1)) <= constraint.channels(
      support.shape)


SUPPORT_CASES = [
    pytest.param(
        Case(make=lambda shape, keep: constraints.KeepLargest(keep=keep),
             feasible=_keep_largest_feasible,
             shapes=[(1,), (7,), (12, 5), (3, 3, 2, 4)],
             tiny_shapes=[(1,), (4,), (2, 3), (3, 3), (2, 5), (10,)]),
        id='keep_largest'),
    pytest.param(_n_of_m_case(2, 4), id='2_of_4'),
    pytest.param(_n_of_m_case(1, 4), id='1_of_4'),
    pytest.param(_n_of_m_case(4, 8), id='4_of_8'),
    pytest.param(
        Case(make=lambda shape, keep: constraints.KeepChannels(axis=-1,
                                                               keep=keep),
             feasible=_channels_feasible,
             shapes=[(1,), (7,), (12, 5), (3, 3, 2, 4)],
             tiny_shapes=[(4,), (2, 3), (3, 3), (2, 5), (5, 2)]),
        id='keep_channels'),
]
CASES = SUPPORT_CASES + LEVEL_CASES

SEEDS = [0, 1, 2]
FRACTIONS = [0.0, 0.3, 0.5, 1.0]  # of the allowed entries kept
KINDS = ['normal', 'ties', 'float64']
TARGETS = [None, tf_admm.CompressionRate(10), tf_admm.Sparsity(0.75),
           tf_admm.KeepRatio(0.5)]


def random_weights(shape, seed, kind):
  rng = np.random.default_rng(seed)
  if kind == 'ties':  # few distinct magnitudes, both signs, and zeros
    return rng.integers(-2, 3, size=shape).astype(np.float32)
  dtype = np.float64 if kind == 'float64' else np.float32
  return rng.normal(size=shape).astype(dtype)


def random_allowed(shape, seed):
  """A random allowed mask, or None for seed None."""
  if seed is None:
    return None
  return np.random.default_rng(seed + 1000).random(shape) < 0.6


def problems(shape, seed, masked):
  """(weights, allowed) of each kind; the entries not allowed are the
  largest, so a projection that ignored `allowed` would keep them."""
  allowed = random_allowed(shape, seed if masked else None)
  for kind in KINDS:
    w = random_weights(shape, seed, kind)
    if allowed is not None:
      w = np.where(allowed, w, w + np.where(w < 0, -100, 100))
      w = w.astype(np.float64 if kind == 'float64' else np.float32)
    yield w, allowed


def available(w, allowed):
  return w.size if allowed is None else int(np.count_nonzero(allowed))


def sample_constraint(case, target=None):
  shape = case.shapes[-1]
  constraint = case.make(shape, int(np.prod(shape)) // 2)
  return dataclasses.replace(constraint, target=target)


def check_feasible(case, constraint, w, allowed, result):
  where = f'shape={w.shape} allowed={allowed is not None} {constraint}'
  assert isinstance(result, projections.Projection), where
  values, mask = result
  assert isinstance(values, np.ndarray) and isinstance(mask, np.ndarray), where
  assert values.shape == w.shape and values.dtype == w.dtype, where
  assert mask.shape == w.shape and mask.dtype == bool, where
  if case.moves_values:
    assert not np.any(values[~mask]), where
  else:
    np.testing.assert_array_equal(values, np.where(mask, w, 0), err_msg=where)
  if constraint.keep is not None:
    assert np.count_nonzero(values) <= constraint.keep, where
    assert np.count_nonzero(mask) <= constraint.keep, where
  if allowed is not None:
    assert not np.any(mask & ~allowed), where
    assert not np.any(values[~allowed]), where
  assert case.feasible(constraint, mask, values), where


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('fraction', FRACTIONS)
def test_projection_is_feasible(case, seed, masked, fraction):
  for shape in case.shapes:
    for w, allowed in problems(shape, seed, masked):
      keep = int(round(fraction * available(w, allowed)))
      constraint = case.make(shape, keep)
      before = w.copy()
      result = constraint.project(w, allowed)
      np.testing.assert_array_equal(w, before)  # the input is left alone
      check_feasible(case, constraint, w, allowed, result)
      if allowed is None:  # allowing everything is the same as no mask
        every = constraint.project(w, np.ones(shape, bool))
        np.testing.assert_array_equal(every.values, result.values)
        np.testing.assert_array_equal(every.mask, result.mask)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('fraction', FRACTIONS)
def test_projection_is_idempotent(case, seed, masked, fraction):
  for shape in case.shapes:
    for w, allowed in problems(shape, seed, masked):
      constraint = case.make(shape,
                             int(round(fraction * available(w, allowed))))
      once = constraint.project(w, allowed)
      twice = constraint.project(once.values, allowed)
      check_feasible(case, constraint, once.values, allowed, twice)
      # Levels refitted to values already on them agree to rounding.
      np.testing.assert_allclose(twice.values, once.values,
                                 rtol=(8 * np.finfo(w.dtype).eps
                                       if case.moves_values else 0),
                                 err_msg=f'shape={shape} {constraint}')


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('seed', SEEDS)
def test_entries_not_allowed_stay_zero(case, seed):
  for shape in case.shapes:
    rng = np.random.default_rng(seed)
    allowed = rng.random(shape) < 0.4
    # Large weights outside `allowed`, small ones inside.
    w = np.where(allowed, rng.normal(size=shape),
                 1e3 * np.sign(rng.normal(size=shape))).astype(np.float32)
    count = int(np.count_nonzero(allowed))
    for keep in sorted({0, count // 2, count}):
      values, mask = case.make(shape, keep).project(w, allowed)
      assert not np.any(mask[~allowed]), f'shape={shape} keep={keep}'
      assert not np.any(values[~allowed]), f'shape={shape} keep={keep}'


@functools.lru_cache(maxsize=None)
def all_supports(shape):
  """Every bool array of `shape`, stacked: (2 ** size,) + shape."""
  size = int(np.prod(shape))
  assert size <= 10, 'brute force is for tiny shapes'
  bits = (np.arange(2**size)[:, None] >> np.arange(size)) & 1
  return bits.astype(bool).reshape((-1,) + tuple(shape))


# Level constraints' nearest-point property (for their fitted levels, whose
# error is checked against a fine scan) is tested in test_projections.py.
@pytest.mark.parametrize('case', SUPPORT_CASES)
@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('masked', [False, True])
def test_projection_is_the_nearest_feasible_point(case, seed, masked):
  """No support the constraint admits is strictly closer to the weights."""
  for shape in case.tiny_shapes:
    supports = all_supports(shape)
    for w, allowed in problems(shape, seed, masked):
      w64 = w.astype(np.float64)
      # ||W - W * S||^2 for every support S at once.
      distances = np.sum(np.where(supports, 0.0, w64**2),
                         axis=tuple(range(1, w.ndim + 1)))
      inside = np.ones(len(supports), bool) if allowed is None else (
          ~np.any(supports & ~allowed, axis=tuple(range(1, w.ndim + 1))))
      for keep in range(available(w, allowed) + 1):
        constraint = case.make(shape, keep)
        result = constraint.project(w, allowed)
        check_feasible(case, constraint, w, allowed, result)
        admitted = [i for i in np.flatnonzero(inside)
                    if case.feasible(constraint, supports[i], None)]
        best = distances[admitted].min()
        got = np.sum((w64 - result.values.astype(np.float64))**2)
        # Ties may pick another support at the same distance.
        assert got <= best + 1e-9 * (1 + best), (
            f'shape={shape} allowed={allowed is not None} {constraint}: '
            f'the projection is {got} away, a feasible support {best}; '
            f'w={w.ravel()}')


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('target', TARGETS)
def test_config_round_trip(case, target):
  constraint = sample_constraint(case, target)
  config = json.loads(json.dumps(constraint.get_config()))  # as saved
  restored = type(constraint).from_config(config)
  assert type(restored) is type(constraint)
  assert restored == constraint
  assert restored.target == target and type(restored.target) is type(target)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('target', TARGETS)
def test_serialization_round_trips_and_matches_keras(case, target):
  constraint = sample_constraint(case, target)
  config = json.loads(json.dumps(constraints.serialize(constraint)))
  # Files Keras wrote, of either Keras, read back the same.
  assert config == json.loads(json.dumps(
      keras.utils.serialize_keras_object(constraint)))
  assert config == json.loads(json.dumps(
      keras_compat.keras3.saving.serialize_keras_object(constraint)))
  for restored in (constraints.deserialize(config),
                   keras.utils.deserialize_keras_object(config)):
    assert type(restored) is type(constraint)
    assert restored == constraint
    assert restored.target == target and type(restored.target) is type(
        target)


@pytest.mark.parametrize('config', [
    {'module': 'os', 'class_name': 'system', 'config': {}},
    {'module': 'tf_admm.constraints', 'class_name': 'Constraint',
     'config': {}},
    {'class_name': 'KeepLargest', 'config': {'keep': 3, 'nope': 1,
                                             'target': None}},
    {'class_name': 'KeepLargest', 'config': {
        'keep': 3, 'target': {'class_name': 'Evil', 'value': 1}}},
    ['KeepLargest'], None,
])
def test_deserialize_makes_only_tf_admm_constraints(config):
  with pytest.raises(ValueError, match='tf_admm constraint|cannot be made'):
    constraints.deserialize(config)


@pytest.mark.parametrize('case', CASES)
def test_has_levels_says_whether_there_are_levels_to_hold(case):
  constraint = sample_constraint(case)
  assert constraint.has_levels == any(case is p.values[0]
                                      for p in LEVEL_CASES)
  assert (constraint.levels_shape(case.shapes[-1]) is not None) == (
      constraint.has_levels)


@pytest.mark.parametrize('case', CASES)
def test_registered_with_keras(case):
  cls = type(sample_constraint(case))
  name = cls.__name__
  assert keras.utils.get_registered_name(cls) == f'tf_admm>{name}'
  assert keras.utils.get_registered_object(f'tf_admm>{name}') is cls
  # Legacy formats look objects up by the bare name.
  assert keras.utils.get_custom_objects()[name] is cls


@pytest.mark.parametrize('case', CASES)
def test_is_a_frozen_constraint_dataclass(case):
  constraint = sample_constraint(case, tf_admm.CompressionRate(10))
  assert isinstance(constraint, constraints.Constraint)
  assert dataclasses.is_dataclass(constraint)
  with pytest.raises(dataclasses.FrozenInstanceError):
    constraint.keep = 1


@pytest.mark.parametrize('case', CASES)
def test_with_keep_changes_only_keep(case):
  constraint = sample_constraint(case, tf_admm.CompressionRate(10))
  shape = case.shapes[-1]
  for keep in [0, 1, int(np.prod(shape)) // 3]:
    changed = constraint.with_keep(keep)
    assert type(changed) is type(constraint)
    assert changed.keep == keep
    for field in dataclasses.fields(constraint):
      if field.name != 'keep':
        assert getattr(changed, field.name) == getattr(constraint,
                                                       field.name), field.name
    w = random_weights(shape, keep, 'normal')
    assert np.count_nonzero(changed.project(w).mask) <= keep
  # The original is left as it was.
  assert constraint == sample_constraint(case, tf_admm.CompressionRate(10))


# KeepLargest's own behaviour.


@pytest.mark.parametrize('shape', [(7,), (12, 5), (3, 3, 2, 4)])
@pytest.mark.parametrize('kind', KINDS)
def test_keep_largest_matches_the_numpy_reference(shape, kind):
  w = random_weights(shape, 5, kind)
  allowed = random_allowed(shape, 5)
  for mask in [None, allowed]:
    count = available(w, mask)
    for keep in sorted({0, 1, count // 3, count}):
      values, got_mask = constraints.KeepLargest(keep=keep).project(w, mask)
      want_values, want_mask = numpy_keep_top_k(w, keep, mask)
      np.testing.assert_array_equal(got_mask, want_mask)
      np.testing.assert_array_equal(values, want_values)
      assert np.count_nonzero(got_mask) == keep  # exactly keep, zeros too


def test_keep_largest_without_keep_cannot_project():
  with pytest.raises(ValueError, match='KeepLargest needs a `keep` count'):
    constraints.KeepLargest().project(np.ones((2, 2), np.float32))
  with pytest.raises(ValueError, match='KeepLargest needs a `keep` count'):
    constraints.KeepLargest(target=tf_admm.CompressionRate(4)).project(
        np.ones((2, 2), np.float32), np.ones((2, 2), bool))


def test_keep_largest_rejects_keep_above_the_allowed_count():
  allowed = np.array([True, False, True, False])
  with pytest.raises(ValueError, match='allows only 2'):
    constraints.KeepLargest(keep=3).project(np.ones(4, np.float32), allowed)


def test_keep_largest_for_weight():
  weight = tf_admm.prunable_weights(small_model())[0]
  target = tf_admm.CompressionRate(10)
  assert constraints.KeepLargest().for_weight(weight, None) is None
  assert constraints.KeepLargest(keep=3).for_weight(weight, None,
                                                    target) is None
  fitted = constraints.KeepLargest().for_weight(weight, 5, target)
  assert type(fitted) is constraints.KeepLargest
  assert fitted == constraints.KeepLargest(keep=5, target=target)
  assert constraints.KeepLargest(keep=9).for_weight(weight, 2) == (
      constraints.KeepLargest(keep=2))


# NOutOfM's own behaviour.


def test_keep_channels_runs_along_each_weights_output_channels():
  weights = {w.path: w for w in tf_admm.prunable_weights(separable_cnn())}
  target = tf_admm.KeepRatio(0.5)
  pointwise = constraints.KeepChannels().for_weight(
      weights['sep/pointwise_kernel'], 16, target)
  assert pointwise == constraints.KeepChannels(axis=-1, keep=16,
                                               target=target)
  assert pointwise.channels((1, 1, 3, 8)) == 5  # 16 // 3 entries each
  transposed = constraints.KeepChannels().for_weight(weights['up/kernel'], 9)
  assert transposed.axis == -2  # (h, w, filters, input channels)
  # A depthwise kernel's channels are its input's: it is left out.
  assert constraints.KeepChannels().for_weight(weights['dw/depthwise_kernel'],
                                               9) is None
  assert constraints.KeepChannels().for_weight(weights['fc/kernel'],
                                               None) is None
  with pytest.raises(ValueError, match='needs `keep` and `axis`'):
    constraints.KeepChannels(keep=3).project(np.ones((2, 2)))


def test_n_of_m_fits_the_weights_input_dimension_or_falls_back():
  model = separable_cnn()  # sep: depthwise 3x3x3x1, pointwise 1x1x3x8
  weights = {w.path: w for w in tf_admm.prunable_weights(model)}
  pattern = constraints.NOutOfM(2, 4)
  target = tf_admm.CompressionRate(2)
  # Conv2DTranspose kernels are (h, w, filters, inputs): 16 inputs.
  assert pattern.for_weight(weights['up/kernel'], 7, target) == (
      constraints.NOutOfM(2, 4, axis=-1, keep=7, target=target))
  assert pattern.for_weight(weights['fc/kernel'], None) == (
      constraints.NOutOfM(2, 4, axis=0))
  # No input dimension (depthwise), or one of 3 channels: a plain count.
  for path in ('sep/depthwise_kernel', 'sep/pointwise_kernel'):
    assert pattern.for_weight(weights[path], 5, target) == (
        constraints.KeepLargest(keep=5, target=target))
    assert pattern.for_weight(weights[path], None) is None


@pytest.mark.parametrize('text, want', [('2:4', (2, 4)), ('1:4', (1, 4)),
                                        ('4:8', (4, 8))])
def test_n_of_m_parses_its_flag(text, want):
  parsed = constraints.NOutOfM.parse(text)
  assert (parsed.n, parsed.m) == want and parsed.axis is None


@pytest.mark.parametrize('text', ['2/4', '4:2', '0:4', '2:4:8', 'two:four'])
def test_n_of_m_rejects_bad_patterns(text):
  with pytest.raises(ValueError, match='N:M|0 < n < m'):
    constraints.NOutOfM.parse(text)


def test_n_of_m_without_an_axis_cannot_project():
  with pytest.raises(ValueError, match='needs an `axis`'):
    constraints.NOutOfM(2, 4).project(np.ones((4, 4), np.float32))


# Quantize's own behaviour.


def test_a_trained_scale_is_shared_along_every_axis_but_the_channels():
  assert constraints.Quantize('binary').held_scale_axes(4) is None
  trained = constraints.Quantize('binary', train_scale=True)
  assert trained.held_scale_axes(4) == (0, 1, 2, 3)
  assert dataclasses.replace(trained, axis=-1).held_scale_axes(4) == (0, 1, 2)
  assert dataclasses.replace(trained, axis=-2).held_scale_axes(4) == (0, 1, 3)


@pytest.mark.parametrize('kwargs, match', [
    (dict(levels='uniform'), 'needs bits, an integer from 1 to 8'),
    (dict(levels='kmeans', bits=9), 'needs bits, an integer from 1 to 8'),
    (dict(levels='ternary', bits=2), 'has fixed levels; give no bits'),
    (dict(levels='octal'), 'levels must be one of'),
])
def test_quantize_rejects_bad_levels(kwargs, match):
  with pytest.raises(ValueError, match=match):
    constraints.Quantize(**kwargs)


@pytest.mark.parametrize('kwargs, count, bits', [
    (dict(levels='uniform', bits=3), 8, 3),
    (dict(levels='uniform', bits=1), 2, 1),
    (dict(levels='ternary'), 3, 1),
    (dict(levels='binary'), 2, 1),
    (dict(levels='kmeans', bits=2), 4, 2),
])
def test_quantize_level_counts_and_storage_bits(kwargs, count, bits):
  quantize = constraints.Quantize(**kwargs)
  assert quantize.level_count == count
  assert quantize.storage_bits == bits
  assert quantize.levels_shape((5, 7)) == (1, count)
  assert dataclasses.replace(quantize, axis=-1).levels_shape((5, 7)) == (
      7, count)


@pytest.mark.parametrize('name, bits, count, storage', [
    ('uniform', 3, 8, 3), ('ternary', None, 3, 1), ('binary', None, 2, 1),
    ('kmeans', 2, 4, 2)])
def test_every_level_family_fits_its_count_of_levels(name, bits, count,
                                                     storage):
  constraint = constraints.Quantize(name, bits=bits, axis=-1)
  assert constraint.level_count == count
  assert constraint.storage_bits == storage
  w = np.random.default_rng(0).normal(size=(16, 3))
  levels = constraint.fit_levels(w)
  assert levels.shape == constraint.levels_shape(w.shape) == (3, count)
  projected = constraint.project(w, levels=levels).values
  for channel in range(3):
    assert set(projected[:, channel]) <= set(levels[channel]) | {0.0}


def test_a_new_level_family_is_one_class(monkeypatch):

  class Quinary(levels.LevelFamily):
    """{-2q, -q, 0, q, 2q}: ternary with one more step."""

    def codes(self, bits):
      return (0, 1, 2)

  monkeypatch.setitem(levels.LEVEL_FAMILIES, 'quinary', Quinary())
  constraint = constraints.Quantize('quinary', axis=-1)
  assert (constraint.level_count, constraint.storage_bits) == (5, 2)
  w = np.random.default_rng(1).normal(size=(32, 2))
  projected = constraint.project(w).values
  for channel in range(2):
    values = projected[:, channel]
    step = np.abs(values[values != 0]).min()
    np.testing.assert_allclose(sorted(set(np.abs(values) / step)), [0, 1, 2])
