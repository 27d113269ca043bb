"""Euclidean projections onto the ADMM constraint sets: pure numpy functions.

Each takes a weight array (and optionally `allowed`, the entries an earlier
prune left; the others are never kept) and returns a `Projection`: the
nearest point of the set and the mask of the entries it keeps. Ties are
broken toward the lower flat (row-major) index, so results are
deterministic. `tf_admm.constraints` wraps each in a serializable object.
"""

from typing import NamedTuple, Optional

import numpy as np


class Projection(NamedTuple):
  values: np.ndarray  # the projected array, same shape and dtype as the input
  mask: np.ndarray  # bool, True where `values` keeps an entry


def _scores(weights, allowed):
  """|weights| as float64, with entries not allowed below every other."""
  scores = np.abs(weights).astype(np.float64)
  if allowed is not None:
    scores = np.where(np.asarray(allowed, bool), scores, -1.0)
  return scores


def _apply(weights, mask) -> Projection:
  return Projection(np.where(mask, weights, np.zeros_like(weights)), mask)


def keep_top_k(weights, k: int, allowed=None) -> Projection:
  """Keeps the `k` entries of largest magnitude and zeroes the rest.

  The projection onto {W : at most k nonzeros}: exactly `k` entries survive
  (even if some are 0). `k` must not exceed the number of allowed entries.
  """
  weights = np.asarray(weights)
  size = weights.size
  if not 0 <= k <= size:
    raise ValueError(f'keep_top_k: k={k} is outside [0, {size}] for an array '
                     f'of shape {weights.shape}.')
  available = size if allowed is None else int(np.count_nonzero(allowed))
  if k > available:
    raise ValueError(f'keep_top_k: cannot keep {k} entries when the mask '
                     f'allows only {available}; a target must not keep more '
                     'weights than earlier prunes left.')
  scores = _scores(weights, allowed).ravel()
  mask = np.zeros(size, bool)
  if k:
    # A linear-time selection (a full sort took ~30 ms on a 235k kernel,
    # paid at every prune of a ramp): everything above the k-th largest
    # score, then as many entries equal to it as fit, lowest index first.
    kth = np.partition(scores, size - k)[size - k]
    mask = scores > kth
    ties = np.flatnonzero(scores == kth)
    mask[ties[:k - np.count_nonzero(mask)]] = True
  return _apply(weights, mask.reshape(weights.shape))


def n_of_m(weights, n: int, m: int, axis: int, keep: Optional[int] = None,
           allowed=None) -> Projection:
  """Keeps the `n` largest of every `m` consecutive entries along `axis`.

  With `keep`, also at most `keep` entries in all: the largest of the
  pattern's survivors (greedy selection is exact here, since the feasible
  supports form a matroid). `weights.shape[axis]` must be a multiple of `m`.
  """
  weights = np.asarray(weights)
  if not 0 < n <= m:
    raise ValueError(f'n_of_m: need 0 < n <= m, got {n}:{m}.')
  if weights.shape[axis] % m:
    raise ValueError(f'n_of_m: axis {axis} of shape {weights.shape} is not a '
                     f'multiple of m={m}.')
  scores = np.moveaxis(_scores(weights, allowed), axis, -1)
  groups = scores.reshape(-1, m)
  # Stable: among equal magnitudes the lower index ranks first.
  order = np.argsort(-groups, axis=-1, kind='stable')
  group_mask = np.zeros(groups.shape, bool)
  np.put_along_axis(group_mask, order[:, :n], True, axis=-1)
  group_mask &= groups >= 0  # never an entry that is not allowed
  mask = np.moveaxis(group_mask.reshape(scores.shape), -1, axis)
  if keep is not None and keep < np.count_nonzero(mask):
    mask = keep_top_k(weights, keep, allowed=mask).mask
  return _apply(weights, mask)
