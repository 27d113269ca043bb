"""The pure ADMM steps against numpy, and that they leave their inputs
alone."""

import dataclasses

import numpy as np
import pytest

from tf_admm import admm_state
from tf_admm import constraints
from tests.test_projections import numpy_keep_top_k


def _state(shape, levels_shape=None, seed=0):
  rng = np.random.default_rng(seed)
  extra = {}
  if levels_shape:
    extra = dict(levels=np.zeros(levels_shape, np.float32),
                 held=np.zeros(shape, np.float32),
                 held_values=np.zeros(shape, np.float32))
  return admm_state.AdmmState(
      z=rng.normal(size=shape).astype(np.float32),
      u=(0.1 * rng.normal(size=shape)).astype(np.float32), rho=0.1,
      mask=np.ones(shape, np.float32), **extra)


def _copy(state):
  return {f.name: np.copy(getattr(state, f.name))
          for f in dataclasses.fields(state)}


def _unchanged(state, before):
  for name, value in before.items():
    np.testing.assert_array_equal(getattr(state, name), value)


def test_update_is_the_admm_step_and_leaves_its_input_alone():
  state = _state((6, 5))
  before = _copy(state)
  w = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
  new, z_change, rho = admm_state.update(
      state, constraints.KeepLargest(keep=8), w, rho_growth=1.5)
  z = numpy_keep_top_k(w + state.u, 8)[0]
  np.testing.assert_array_equal(new.z, z)
  np.testing.assert_allclose(new.u, state.u + w - z, atol=1e-6)
  assert new.rho == rho == pytest.approx(0.15)
  assert z_change == pytest.approx(np.linalg.norm(z - state.z), rel=1e-5)
  _unchanged(state, before)


def test_restart_and_hard_project_match_numpy():
  state = _state((6, 5))
  w = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
  constraint = constraints.KeepLargest(keep=8)
  restarted = admm_state.restart(state, constraint, w, initial_rho=0.01)
  np.testing.assert_array_equal(restarted.z, numpy_keep_top_k(w, 8)[0])
  assert not restarted.u.any() and restarted.rho == 0.01
  before = _copy(restarted)
  projected, values = admm_state.hard_project(restarted, constraint, w, 1.0)
  want_values, want_mask = numpy_keep_top_k(w, 8)
  np.testing.assert_array_equal(values, want_values)
  np.testing.assert_array_equal(projected.mask, want_mask)
  _unchanged(restarted, before)


@pytest.mark.parametrize('progress', [0.3, 0.6, 1.0])
def test_a_hold_fixes_the_share_of_kept_entries_nearest_their_levels(
    progress):
  constraint = constraints.Quantize('ternary', axis=-1)
  state = _state((8, 4), constraint.levels_shape((8, 4)))
  w = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
  new, values = admm_state.hard_project(state, constraint, w, progress)
  held = new.held > 0
  kept = new.mask > 0
  assert np.count_nonzero(held) == int(np.ceil(progress * kept.sum() - 1e-9))
  projected = constraint.project(w, levels=new.levels).values
  np.testing.assert_array_equal(values[held], projected[held])
  np.testing.assert_array_equal(values[~held], (w * new.mask)[~held])
  # Those held are the nearest their levels.
  distance = np.abs(w - projected)
  if (~held & kept).any():
    assert distance[held].max() <= distance[~held & kept].min() + 1e-7
