"""How many bytes a pruned and quantized model's weights need, in the
papers' terms: weight data alone, and with sparse indices.

  weight data: each nonzero weight costs its level's index, `bits` bits
    (32 for a weight left in float).
  with index: each nonzero also carries a relative index, its distance from
    the previous nonzero in row-major order, in `b` bits (Deep Compression,
    Han et al. 2016): a distance above 2**b is bridged by filler zeros that
    cost an index and a weight each. `b` is chosen per weight, from 1 to 16,
    to make that weight smallest; b = 0 stands for no index at all, every
    entry stored (with one more bit for the zeros, if there are any), where
    that is smaller, as for an unpruned weight.
Both are compared with the dense float32 weights (32 bits per entry). The
sizes count the prunable weights (kernels), as the compression rate does;
biases and the levels' scales are left out, as the papers leave them out.
"""

from typing import Mapping, Optional

import numpy as np

INDEX_BITS = range(1, 17)


def relative_index_entries(mask: np.ndarray, index_bits: int) -> int:
  """Entries stored with `index_bits`-bit relative indices: the nonzeros
  plus the filler zeros that bridge longer gaps."""
  positions = np.flatnonzero(np.asarray(mask).ravel())
  if not positions.size:
    return 0
  gaps = np.diff(np.concatenate([[-1], positions]))
  span = 2**index_bits
  return int(np.sum(-(-gaps // span)))  # ceil(gap / span) entries each


def weight_storage(mask: np.ndarray, bits: int) -> dict:
  """{'nonzeros', 'bits', 'index_bits', 'weight_data_bits',
  'with_index_bits', 'dense_bits'} of one weight."""
  mask = np.asarray(mask) != 0
  nonzeros = int(np.count_nonzero(mask))
  sizes = {b: relative_index_entries(mask, b) * (b + bits) for b in INDEX_BITS}
  sizes[0] = mask.size * (bits + (0 if mask.all() else 1))  # no index
  best = min(sizes, key=lambda b: (sizes[b], b))
  return {'nonzeros': nonzeros, 'bits': bits, 'index_bits': best,
          'weight_data_bits': nonzeros * bits,
          'with_index_bits': sizes[best], 'dense_bits': mask.size * 32}


def model_storage(weights: Mapping[str, np.ndarray],
                  bits: Mapping[str, Optional[int]],
                  dense_entries: Optional[int] = None) -> dict:
  """The `storage` section of a report.

  Args:
    weights: {weight path: values} of the prunable weights.
    bits: {weight path: bits naming a nonzero's level}; a path missing or
      None is stored as float32.
    dense_entries: the entries of the dense model's prunable weights, the
      float32 reference (default: those of `weights`; a model cut down to
      its kept channels has fewer).

  Returns:
    {'weight_data_bytes', 'weight_data_reduction', 'with_index_bytes',
     'with_index_reduction', 'dense_bytes', 'index_encoding', 'weights':
     {path: weight_storage(...)}}.
  """
  per_weight = {path: weight_storage(values != 0, bits.get(path) or 32)
                for path, values in weights.items()}
  total = {key: sum(s[key] for s in per_weight.values())
           for key in ('weight_data_bits', 'with_index_bits', 'dense_bits')}
  if dense_entries is not None:
    total['dense_bits'] = 32 * dense_entries
  return {
      'weight_data_bytes': total['weight_data_bits'] / 8,
      'weight_data_reduction': total['dense_bits'] / max(
          total['weight_data_bits'], 1),
      'with_index_bytes': total['with_index_bits'] / 8,
      'with_index_reduction': total['dense_bits'] / max(
          total['with_index_bits'], 1),
      'dense_bytes': total['dense_bits'] / 8,
      'index_encoding': ('relative indices (Deep Compression): per weight, '
                         'b-bit distances between nonzeros in row-major '
                         'order, filler zeros bridging longer gaps, b in '
                         '1..16 chosen per weight (0: no index, every entry '
                         'stored, where smaller)'),
      'weights': per_weight,
  }
