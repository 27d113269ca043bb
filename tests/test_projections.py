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


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('fraction', [0.0, 0.01, 0.1, 0.5, 0.93, 1.0])
def test_keep_top_k_matches_numpy(shape, fraction):
  rng = np.random.default_rng(hash((shape, fraction)) % 2**32)
  w = rng.normal(size=shape).astype(np.float32)
  k = int(round(w.size * fraction))
  values, mask = projections.keep_top_k(w, k)
  want_values, want_mask = numpy_keep_top_k(w, k)
  np.testing.assert_array_equal(mask.numpy(), want_mask)
  np.testing.assert_array_equal(values.numpy(), want_values)
  assert mask.numpy().sum() == k


@pytest.mark.parametrize('shape', SHAPES)
def test_ties_keep_exactly_k_lowest_index_first(shape):
  rng = np.random.default_rng(1)
  # Few distinct magnitudes, both signs: many ties at every threshold.
  w = (rng.integers(-3, 4, size=shape)).astype(np.float32)
  for k in range(0, w.size + 1, max(1, w.size // 9)):
    values, mask = projections.keep_top_k(w, k)
    want_values, want_mask = numpy_keep_top_k(w, k)
    assert mask.numpy().sum() == k
    np.testing.assert_array_equal(mask.numpy(), want_mask)
    np.testing.assert_array_equal(values.numpy(), want_values)


def test_allowed_mask_is_respected():
  rng = np.random.default_rng(2)
  w = rng.normal(size=(20, 10)).astype(np.float32)
  allowed = rng.random((20, 10)) < 0.3
  k = int(allowed.sum()) - 5
  values, mask = projections.keep_top_k(w, k, allowed=allowed)
  want_values, want_mask = numpy_keep_top_k(w, k, allowed)
  np.testing.assert_array_equal(mask.numpy(), want_mask)
  np.testing.assert_array_equal(values.numpy(), want_values)
  assert not np.any(mask.numpy() & ~allowed)


def test_nested_counts_match_separate_projections():
  rng = np.random.default_rng(3)
  # Ties (few distinct magnitudes) and an allowed mask, as at a ramp prune.
  w = rng.integers(-4, 5, size=(30, 11)).astype(np.float32)
  allowed = rng.random(w.shape) < 0.6
  ks = [int(allowed.sum()) - 3, 57, 0, 57, 12]
  for k, (values, mask) in zip(ks, projections.keep_top_k_nested(
      w, ks, allowed=allowed)):
    want_values, want_mask = numpy_keep_top_k(w, k, allowed)
    np.testing.assert_array_equal(mask.numpy(), want_mask)
    np.testing.assert_array_equal(values.numpy(), want_values)


def test_out_of_range_k_is_rejected():
  w = np.ones((3, 3), np.float32)
  with pytest.raises(ValueError, match='outside'):
    projections.keep_top_k(w, 10)
  with pytest.raises(ValueError, match='outside'):
    projections.keep_top_k(w, -1)
  allowed = np.zeros((3, 3), bool)
  allowed[0, :2] = True
  with pytest.raises(ValueError, match='allows only 2'):
    projections.keep_top_k(w, 3, allowed=allowed)
