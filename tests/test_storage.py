"""Weight storage in the papers' terms, against a direct encoding."""

import numpy as np
import pytest

from tf_admm import storage


def encode_relative(mask, index_bits):
  """Deep Compression's encoding written out: (distance, is_filler) pairs."""
  entries, last = [], -1
  for position in np.flatnonzero(mask.ravel()):
    distance = position - last
    while distance > 2**index_bits:
      entries.append((2**index_bits, True))
      distance -= 2**index_bits
    entries.append((distance, False))
    last = position
  return entries


@pytest.mark.parametrize('density', [0.0, 0.005, 0.1, 0.9])
@pytest.mark.parametrize('index_bits', [1, 3, 5, 8])
def test_relative_index_entries_match_the_encoding(density, index_bits):
  mask = np.random.default_rng(0).random((40, 30)) < density
  entries = encode_relative(mask, index_bits)
  assert storage.relative_index_entries(mask, index_bits) == len(entries)
  assert sum(not filler for _, filler in entries) == np.count_nonzero(mask)
  assert all(0 < d <= 2**index_bits for d, _ in entries)


def test_weight_storage_picks_the_smallest_index_width():
  mask = np.random.default_rng(1).random(5000) < 0.01
  got = storage.weight_storage(mask, bits=3)
  sizes = {b: len(encode_relative(mask, b)) * (b + 3) for b in range(1, 17)}
  sizes[0] = 5000 * 4  # every entry, one more bit telling zeros apart
  assert got['with_index_bits'] == min(sizes.values())
  assert sizes[got['index_bits']] == got['with_index_bits']
  assert got['weight_data_bits'] == np.count_nonzero(mask) * 3
  assert got['dense_bits'] == 5000 * 32


def test_model_storage_sums_weights_and_counts_float_ones_at_32_bits():
  rng = np.random.default_rng(2)
  weights = {'a/kernel': rng.normal(size=(50, 20)) * (rng.random((50, 20))
                                                      < 0.05),
             'b/kernel': rng.normal(size=(20, 4))}
  report = storage.model_storage(weights, {'a/kernel': 2})
  nonzeros_a = np.count_nonzero(weights['a/kernel'])
  assert report['weight_data_bytes'] == (nonzeros_a * 2 + 80 * 32) / 8
  assert report['dense_bytes'] == (1000 + 80) * 4
  assert report['weight_data_reduction'] == pytest.approx(
      report['dense_bytes'] / report['weight_data_bytes'])
  assert report['with_index_bytes'] > report['weight_data_bytes']
  assert report['weights']['b/kernel']['bits'] == 32


def test_an_unpruned_weight_needs_no_index():
  got = storage.weight_storage(np.ones((30, 20), bool), bits=1)
  assert got['index_bits'] == 0
  assert got['with_index_bits'] == got['weight_data_bits'] == 600
