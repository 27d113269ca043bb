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


# Level sets.


def numpy_nearest_level(w, levels):
  """Brute force: each entry of a 1-D row to the closest of `levels`."""
  return levels[np.abs(w[:, None] - levels[None, :]).argmin(axis=1)]


def scan_error(w, codes, scales):
  """Per scale: the squared error of rounding |w| to the codes at it (codes
  consecutive), by brute force over every code."""
  codes = np.asarray(codes, np.float64)
  a = np.abs(w.astype(np.float64))[None, :, None]
  per_code = (a - codes[None, None, :] * scales[:, None, None])**2
  return per_code.min(axis=2).sum(axis=1)


@pytest.mark.parametrize('codes', [(1,), (0, 1), (1, 2), (1, 2, 3, 4)])
@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('distribution', ['normal', 'laplace', 'sparse'])
def test_uniform_levels_beat_a_fine_scan(codes, seed, distribution):
  rng = np.random.default_rng(seed)
  rows = {'normal': rng.normal(size=(4, 60)),
          'laplace': rng.laplace(size=(4, 60)),
          'sparse': rng.normal(size=(4, 60)) * (rng.random((4, 60)) < 0.1),
          }[distribution]
  allowed = rows != 0 if distribution == 'sparse' else None
  levels = projections.uniform_levels(rows, codes, axis=0, allowed=allowed)
  for row in range(4):
    kept = rows[row] if allowed is None else rows[row][allowed[row]]
    if not kept.size:
      continue
    q = levels[row].max() / codes[-1]
    top = np.abs(kept).max()
    fine = np.linspace(top / codes[-1] * 1e-3, 2 * top, 40001)
    best = scan_error(kept, codes, fine).min()
    got = scan_error(kept, codes, np.array([q]))[0]
    assert got <= best * (1 + 1e-9) + 1e-12, (row, got, best)
    signed = np.array(codes, np.float64)
    want = np.concatenate([-signed[::-1][signed[::-1] > 0], signed]) * q
    np.testing.assert_allclose(levels[row], want, rtol=1e-12)


def test_binary_and_ternary_scales_have_closed_forms():
  rng = np.random.default_rng(3)
  w = rng.normal(size=200)
  binary = projections.uniform_levels(w, (1,))
  np.testing.assert_allclose(binary[0, 1], np.abs(w).mean(), rtol=1e-9)
  # Ternary: the best t largest magnitudes share q = their mean.
  a = np.sort(np.abs(w))[::-1]
  t = np.argmax(np.cumsum(a)**2 / np.arange(1, a.size + 1)) + 1
  ternary = projections.uniform_levels(w, (0, 1))
  np.testing.assert_allclose(ternary[0, 2], a[:t].mean(), rtol=1e-9)


@pytest.mark.parametrize('axis', [None, 0, -1])
def test_round_to_levels_matches_brute_force(axis):
  rng = np.random.default_rng(4)
  w = rng.normal(size=(6, 5)).astype(np.float32)
  rows = w.shape[axis] if axis is not None else 1
  levels = np.sort(rng.normal(size=(rows, 3)), axis=1)
  allowed = rng.random(w.shape) < 0.7
  values, mask = projections.round_to_levels(w, levels, axis, allowed)
  np.testing.assert_array_equal(mask, allowed)
  assert values.dtype == w.dtype
  moved = w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0)
  got = values.reshape(1, -1) if axis is None else np.moveaxis(values, axis, 0)
  keep = (allowed.reshape(1, -1) if axis is None else
          np.moveaxis(allowed, axis, 0))
  for row in range(rows):
    want = numpy_nearest_level(moved[row].ravel().astype(np.float64),
                               levels[row]).astype(np.float32)
    want = np.where(keep[row].ravel(), want, 0)
    np.testing.assert_array_equal(got[row].ravel(), want)


def test_kmeans_levels_are_a_lloyd_fixed_point():
  rng = np.random.default_rng(5)
  w = np.concatenate([rng.normal(-2, .3, 50), rng.normal(0.5, .2, 80),
                      rng.normal(3, .5, 30)])
  levels = projections.kmeans_levels(w, 3)[0]
  np.testing.assert_allclose(levels, [-2, 0.5, 3], atol=0.25)
  nearest = np.abs(w[:, None] - levels[None]).argmin(axis=1)
  for k in range(3):  # each level is the mean of the entries nearest it
    np.testing.assert_allclose(levels[k], w[nearest == k].mean(), rtol=1e-12)


def test_kmeans_levels_keep_few_distinct_values_exactly():
  w = np.array([[0.5, -1.25, 0.5, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
  allowed = np.array([[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]], bool)
  levels = projections.kmeans_levels(w, 4, axis=0, allowed=allowed)
  np.testing.assert_array_equal(levels, [[-1.25, 0.5, 2.0, 2.0],
                                         [1.0, 1.0, 1.0, 1.0]])
  assert not projections.kmeans_levels(w, 2, axis=0,
                                       allowed=np.zeros_like(allowed)).any()


def test_level_functions_reject_bad_arguments():
  w = np.ones((2, 3))
  with pytest.raises(ValueError, match='consecutive integers'):
    projections.uniform_levels(w, (1, 3))
  with pytest.raises(ValueError, match='k must be an integer'):
    projections.kmeans_levels(w, 0)
  with pytest.raises(ValueError, match='one row of levels'):
    projections.round_to_levels(w, np.zeros((3, 2)), axis=0)


def numpy_keep_top_channels(w, k, axis, allowed):
  """Reference: each channel's squared norm over its allowed entries by a
  loop, channels ranked by it (ties: lower index), the top k kept."""
  moved = np.moveaxis(w.astype(np.float64), axis, 0)
  open_ = np.moveaxis(allowed, axis, 0)
  norms = [np.sum(np.where(o, c, 0)**2) if o.any() else -1.0
           for c, o in zip(moved, open_)]
  kept = sorted(range(len(norms)), key=lambda i: (-norms[i], i))[:k]
  mask = np.zeros(moved.shape, bool)
  mask[kept] = True
  mask = np.moveaxis(mask, 0, axis) & allowed
  return np.where(mask, w, 0), mask


@pytest.mark.parametrize('shape,axis', [((7,), 0), ((40, 13), -1),
                                        ((40, 13), 0), ((3, 3, 4, 6), -1),
                                        ((3, 3, 6, 4), -2)])
@pytest.mark.parametrize('masked', [False, True])
def test_keep_top_channels_matches_numpy(shape, axis, masked):
  rng = np.random.default_rng(len(shape))
  w = rng.normal(size=shape).astype(np.float32)
  allowed = (rng.random(shape) < 0.7 if masked else np.ones(shape, bool))
  open_channels = np.moveaxis(allowed, axis, 0).reshape(shape[axis],
                                                       -1).any(1).sum()
  for k in range(open_channels + 1):
    got = projections.keep_top_channels(w, k, axis,
                                        allowed if masked else None)
    want_values, want_mask = numpy_keep_top_channels(w, k, axis, allowed)
    np.testing.assert_array_equal(got.mask, want_mask)
    np.testing.assert_array_equal(got.values, want_values)
    kept = np.moveaxis(got.mask, axis, 0).reshape(shape[axis], -1).any(1)
    assert kept.sum() <= k


def test_keep_top_channels_rejects_more_channels_than_allowed():
  allowed = np.zeros((4, 3), bool)
  allowed[:, 0] = True
  with pytest.raises(ValueError, match='allows only 1'):
    projections.keep_top_channels(np.ones((4, 3)), 2, -1, allowed)
  with pytest.raises(ValueError, match='outside'):
    projections.keep_top_channels(np.ones((4, 3)), 4, -1)
