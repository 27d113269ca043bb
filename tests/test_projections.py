import numpy as np
import pytest

from tf_admm import projections


def numpy_keep_top_k(w, k, allowed=None):
  """Reference: stable sort by descending magnitude, disallowed last."""
  flat = np.abs(w).ravel().astype(np.float64)
  if allowed is not None:
    flat = np.where(allowed.ravel(), flat, -1.0)
  kept = np.argsort(-flat, kind='stable')[:k]
  mask = np.zeros(w.size, bool)
  mask[kept] = True
  mask = mask.reshape(w.shape)
  return np.where(mask, w, 0), mask


SHAPES = [(7,), (5, 5, 1, 20), (40, 13), (3, 3, 4, 2)]


def check_matches_reference(w, k, allowed=None):
  got = projections.keep_top_k(w, k, allowed=allowed)
  want_values, want_mask = numpy_keep_top_k(w, k, allowed)
  assert isinstance(got, projections.Projection)
  assert isinstance(got.values, np.ndarray)
  assert isinstance(got.mask, np.ndarray)
  assert got.mask.dtype == bool and got.mask.shape == w.shape
  assert got.values.dtype == w.dtype and got.values.shape == w.shape
  np.testing.assert_array_equal(got.mask, want_mask)
  np.testing.assert_array_equal(got.values, want_values)
  assert got.mask.sum() == k
  return got


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('fraction', [0.0, 0.01, 0.1, 0.5, 0.93, 1.0])
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_keep_top_k_matches_numpy(shape, fraction, dtype):
  rng = np.random.default_rng(
      [len(shape), int(np.prod(shape)), int(fraction * 100)])
  w = rng.normal(size=shape).astype(dtype)
  k = int(round(w.size * fraction))
  check_matches_reference(w, k)


@pytest.mark.parametrize('shape', SHAPES)
def test_ties_keep_exactly_k_lowest_index_first(shape):
  rng = np.random.default_rng(1)
  # Few distinct magnitudes, both signs: many ties at every threshold.
  w = (rng.integers(-3, 4, size=shape)).astype(np.float32)
  for k in range(0, w.size + 1, max(1, w.size // 9)):
    check_matches_reference(w, k)


def test_ties_between_signs_go_to_the_lowest_index():
  w = np.array([1., -2., 2., -1., 2.], np.float32)
  values, mask = projections.keep_top_k(w, 2)
  np.testing.assert_array_equal(mask, [False, True, True, False, False])
  np.testing.assert_array_equal(values, [0., -2., 2., 0., 0.])


def test_zeros_are_kept_when_k_exceeds_the_nonzeros():
  w = np.array([0., 3., 0., 0., -1.], np.float32)
  values, mask = projections.keep_top_k(w, 3)
  np.testing.assert_array_equal(mask, [True, True, False, False, True])
  np.testing.assert_array_equal(values, w)


@pytest.mark.parametrize('shape', SHAPES)
def test_allowed_mask_is_respected(shape):
  rng = np.random.default_rng(2)
  w = rng.normal(size=shape).astype(np.float32)
  allowed = rng.random(shape) < 0.3
  allowed.flat[0] = True  # at least one allowed entry
  # The entries not allowed are the largest: a projection that ignored the
  # mask would keep them.
  w = np.where(allowed, w, 10 * w)
  available = int(allowed.sum())
  for k in sorted({0, 1, available // 2, max(0, available - 5), available}):
    values, mask = check_matches_reference(w, k, allowed)
    assert not np.any(mask & ~allowed)
    assert not np.any(values[~allowed])


def test_allowed_mask_with_ties_keeps_allowed_entries_lowest_index_first():
  w = np.array([[5., 1., 1.], [1., 5., 1.]], np.float32)
  allowed = np.array([[False, True, True], [True, False, True]])
  values, mask = projections.keep_top_k(w, 2, allowed=allowed)
  np.testing.assert_array_equal(mask, [[False, True, True],
                                       [False, False, False]])
  np.testing.assert_array_equal(values, [[0., 1., 1.], [0., 0., 0.]])


def test_the_input_is_not_modified():
  rng = np.random.default_rng(4)
  w = rng.normal(size=(6, 5)).astype(np.float32)
  before = w.copy()
  projections.keep_top_k(w, 7, allowed=rng.random(w.shape) < 0.5)
  np.testing.assert_array_equal(w, before)


def test_out_of_range_k_is_rejected():
  w = np.ones((3, 3), np.float32)
  with pytest.raises(ValueError, match=r'k=10 is outside \[0, 9\]'):
    projections.keep_top_k(w, 10)
  with pytest.raises(ValueError, match=r'k=-1 is outside \[0, 9\]'):
    projections.keep_top_k(w, -1)
  allowed = np.zeros((3, 3), bool)
  allowed[0, :2] = True
  with pytest.raises(ValueError, match='cannot keep 3 entries when the mask '
                     'allows only 2'):
    projections.keep_top_k(w, 3, allowed=allowed)
  # Exactly the allowed count is fine.
  _, mask = projections.keep_top_k(w, 2, allowed=allowed)
  np.testing.assert_array_equal(mask, allowed)


def numpy_n_of_m(w, n, m, axis, keep=None, allowed=None):
  """Reference: group by group in plain Python, then the largest `keep`."""
  moved = np.moveaxis(w, axis, -1)
  ok = (np.ones(w.shape, bool) if allowed is None
        else np.asarray(allowed, bool))
  ok = np.moveaxis(ok, axis, -1)
  mask = np.zeros(moved.shape, bool)
  for index in np.ndindex(moved.shape[:-1]):
    for start in range(0, moved.shape[-1], m):
      group = [(-abs(float(moved[index + (j,)])), j)
               for j in range(start, start + m) if ok[index + (j,)]]
      for _, j in sorted(group)[:n]:
        mask[index + (j,)] = True
  mask = np.moveaxis(mask, -1, axis)
  if keep is not None and keep < mask.sum():
    mask = numpy_keep_top_k(w, keep, mask)[1]
  return np.where(mask, w, 0), mask


N_OF_M_PROBLEMS = [
    (shape, axis, n, m)
    for shape, axis in [((8,), 0), ((12, 5), 0), ((3, 3, 8, 2), -2),
                        ((2, 4), -1)]
    for n, m in [(2, 4), (1, 4), (4, 8)] if shape[axis] % m == 0]


@pytest.mark.parametrize('shape, axis, n, m', N_OF_M_PROBLEMS)
@pytest.mark.parametrize('kind', ['normal', 'ties'])
def test_n_of_m_matches_numpy(shape, axis, n, m, kind):
  rng = np.random.default_rng(7)
  w = (rng.normal(size=shape) if kind == 'normal' else
       rng.integers(-2, 3, size=shape)).astype(np.float32)
  allowed = rng.random(shape) < 0.7
  for keep in (None, 0, 3, w.size // 4):
    for mask_in in (None, allowed):
      values, mask = projections.n_of_m(w, n, m, axis, keep, mask_in)
      want_values, want_mask = numpy_n_of_m(w, n, m, axis, keep, mask_in)
      np.testing.assert_array_equal(mask, want_mask)
      np.testing.assert_array_equal(values, want_values)


def test_n_of_m_rejects_bad_arguments():
  with pytest.raises(ValueError, match='not a multiple of m=4'):
    projections.n_of_m(np.ones((6, 2)), 2, 4, axis=0)
  with pytest.raises(ValueError, match='0 < n <= m'):
    projections.n_of_m(np.ones((4, 2)), 5, 4, axis=0)
