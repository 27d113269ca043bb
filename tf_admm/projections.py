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


def channel_scores(weights, axis: int, allowed=None) -> np.ndarray:
  """The squared L2 norm of each slice along `axis` (output channel) over
  its allowed entries; -1 for a channel with no allowed entry."""
  weights = np.asarray(weights)
  allowed = (np.ones(weights.shape, bool) if allowed is None
             else np.asarray(allowed, bool))
  rows = rows_along(np.where(allowed, weights, 0).astype(np.float64), axis)
  open_rows = rows_along(allowed, axis).any(axis=1)
  return np.where(open_rows, np.sum(rows**2, axis=1), -1.0)


def keep_channel_set(weights, kept, axis: int, allowed=None) -> Projection:
  """Zeroes the slices along `axis` not in `kept` (bool per channel): the
  projection onto the weights whose nonzero channels are among `kept`."""
  weights = np.asarray(weights)
  allowed = (np.ones(weights.shape, bool) if allowed is None
             else np.asarray(allowed, bool))
  rows_shape = rows_along(weights, axis).shape
  mask = allowed & _from_rows(
      np.broadcast_to(np.asarray(kept, bool)[:, None], rows_shape),
      weights.shape, axis)
  return _apply(weights, mask)


def keep_top_channels(weights, k: int, axis: int, allowed=None) -> Projection:
  """Keeps the `k` slices along `axis` (output channels) of largest L2 norm
  over their allowed entries, and zeroes the others whole.

  The projection onto {W : at most k nonzero channels}: the kept channels
  retain the most squared norm. Channels with no allowed entry rank last;
  ties go to the lower index.
  """
  weights = np.asarray(weights)
  channels = weights.shape[axis]
  if not 0 <= k <= channels:
    raise ValueError(f'keep_top_channels: k={k} is outside [0, {channels}] '
                     f'for axis {axis} of shape {weights.shape}.')
  scores = channel_scores(weights, axis, allowed)
  available = int(np.count_nonzero(scores >= 0))
  if k > available:
    raise ValueError(f'keep_top_channels: cannot keep {k} channels when the '
                     f'mask allows only {available}; a target must not keep '
                     'more channels than earlier prunes left.')
  kept = np.zeros(channels, bool)
  kept[np.argsort(-scores, kind='stable')[:k]] = True
  return keep_channel_set(weights, kept, axis, allowed)


# Level sets. A level constraint quantizes each row of a weight (one output
# channel, or the whole tensor) to a few values, its `levels`: an array of
# shape (rows, levels per row). Fitting the levels and rounding to them are
# separate, so levels can be held fixed once some weights sit on them.


def rows_along(array, axis):
  """`array` as (rows, entries per row): one row per index along `axis`, or
  a single row when `axis` is None."""
  array = np.asarray(array)
  if axis is None:
    return array.reshape(1, -1)
  return np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)


def _from_rows(rows, shape, axis):
  if axis is None:
    return rows.reshape(shape)
  moved = np.moveaxis(np.empty(shape, bool), axis, 0).shape
  return np.moveaxis(rows.reshape(moved), 0, axis)


def _allowed_rows(weights, allowed, axis):
  if allowed is None:
    return np.ones(rows_along(weights, axis).shape, bool)
  return rows_along(np.asarray(allowed, bool), axis)


def uniform_levels(weights, codes, axis=None, allowed=None) -> np.ndarray:
  """Symmetric levels {±c * q : c in codes} per row, q minimizing the
  squared error of rounding the allowed entries to them.

  `codes` are consecutive non-negative integers: (1, ..., L) for L levels a
  sign with 0 kept for pruned weights, (0, 1) for ternary, (1,) for binary.
  The error as a function of q is a piecewise quadratic whose pieces change
  where an entry's nearest code does (q = |w| / (c + 1/2)); q is the best
  of the pieces' own least-squares optima, which is exact. A row without
  allowed entries gets q = 0.

  Returns:
    (rows, len(signed codes)) levels, ascending: q * (-L..-1, 1..L).
  """
  codes = np.asarray(codes)
  if codes.ndim != 1 or not np.all(np.diff(codes) == 1) or codes[0] < 0:
    raise ValueError(f'uniform_levels: codes must be consecutive integers >= '
                     f'0, got {codes.tolist()}.')
  allowed = _allowed_rows(weights, allowed, axis)
  magnitudes = np.where(allowed, np.abs(rows_along(weights, axis)), 0.0).astype(
      np.float64)
  low, high = int(codes[0]), int(codes[-1])
  # As q grows past |w| / (c + 1/2) an entry's code drops from c + 1 to c;
  # below every such point all codes are `high`.
  steps = np.arange(low, high)  # c
  bounds = magnitudes[:, :, None] / (steps + 0.5)
  bounds = np.where(allowed[:, :, None], bounds, np.inf).reshape(
      len(magnitudes), -1)
  drop_s1 = np.broadcast_to(magnitudes[:, :, None], allowed.shape +
                            (len(steps),)).reshape(len(magnitudes), -1)
  drop_s2 = np.broadcast_to(2 * steps + 1.0, allowed.shape +
                            (len(steps),)).reshape(len(magnitudes), -1)
  order = np.argsort(bounds, axis=1, kind='stable')
  bounds = np.take_along_axis(bounds, order, axis=1)
  finite = np.isfinite(bounds)
  zero = np.zeros((len(bounds), 1))

  def after_each_bound(start, drops):
    drops = np.where(finite, np.take_along_axis(drops, order, axis=1), 0.0)
    return start[:, None] - np.concatenate([zero, np.cumsum(drops, axis=1)],
                                           axis=1)

  # S1 = sum |w| c and S2 = sum c^2 on each piece.
  s1 = after_each_bound(high * magnitudes.sum(axis=1), drop_s1)
  s2 = after_each_bound(high**2 * allowed.sum(axis=1).astype(np.float64),
                        drop_s2)
  lower = np.concatenate([zero, bounds], axis=1)
  upper = np.concatenate([bounds, np.full((len(bounds), 1), np.inf)], axis=1)
  best = np.where(s2 > 0, s1 / np.where(s2 > 0, s2, 1.0), 0.0)
  # Pieces past the last allowed entry's bound (lower = inf) do not exist.
  exists = np.isfinite(lower)
  q = np.where(exists, np.minimum(np.maximum(best, lower), upper), 0.0)
  error = np.where(exists, q**2 * s2 - 2 * q * s1, np.inf)
  scale = np.take_along_axis(q, error.argmin(axis=1)[:, None], axis=1)[:, 0]
  signed = np.concatenate([-codes[::-1][codes[::-1] > 0], codes])
  return scale[:, None] * signed[None, :]


def kmeans_levels(weights, k: int, axis=None, allowed=None,
                  iterations=50) -> np.ndarray:
  """`k` levels per row by 1-D k-means (Lloyd's algorithm) over the allowed
  entries, started from their quantiles. A row with at most `k` distinct
  allowed values gets exactly those values (the rest repeat the largest),
  so projecting again changes nothing; a row with none gets zeros.

  Returns:
    (rows, k) levels, ascending.
  """
  if not (isinstance(k, int) and k >= 1):
    raise ValueError(f'kmeans_levels: k must be an integer >= 1, got {k!r}.')
  allowed = _allowed_rows(weights, allowed, axis)
  values = rows_along(weights, axis).astype(np.float64)
  levels = np.zeros((len(values), k))
  for row, (row_values, row_allowed) in enumerate(zip(values, allowed)):
    kept = row_values[row_allowed]
    if not kept.size:
      continue
    distinct = np.unique(kept)
    if distinct.size <= k:
      levels[row] = np.pad(distinct, (0, k - distinct.size), mode='edge')
      continue
    centroids = np.quantile(kept, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
      nearest = np.abs(kept[:, None] - centroids[None, :]).argmin(axis=1)
      sums = np.bincount(nearest, kept, minlength=k)
      counts = np.bincount(nearest, minlength=k)
      # An empty cluster keeps its centroid.
      updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
      if np.array_equal(updated, centroids):
        break
      centroids = updated
    levels[row] = np.sort(centroids)
  return levels


def round_to_levels(weights, levels, axis=None, allowed=None) -> Projection:
  """Each allowed entry to the nearest of its row's `levels` (the lower one
  on a tie), the rest to 0: the projection onto the level set for fixed
  levels. The mask is `allowed` (an entry rounded to a level of 0 stays in
  it, as keep_top_k keeps a weight that happens to be 0)."""
  weights = np.asarray(weights)
  allowed_rows = _allowed_rows(weights, allowed, axis)
  rows = rows_along(weights, axis).astype(np.float64)
  levels = np.asarray(levels, np.float64)
  if levels.ndim != 2 or levels.shape[0] != rows.shape[0]:
    raise ValueError(f'round_to_levels: levels of shape {levels.shape} do not '
                     f'give one row of levels for each of the {rows.shape[0]} '
                     'rows.')
  best = np.full(rows.shape, np.inf)
  rounded = np.zeros(rows.shape)
  for column in levels.T:  # a few levels: one pass over the weights each
    distance = np.abs(rows - column[:, None])
    closer = distance < best
    best[closer], rounded[closer] = distance[closer], np.broadcast_to(
        column[:, None], rows.shape)[closer]
  rounded = np.where(allowed_rows, rounded, 0.0)
  return Projection(_from_rows(rounded.astype(weights.dtype), weights.shape,
                               axis),
                    _from_rows(allowed_rows, weights.shape, axis))
