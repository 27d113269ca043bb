"""Euclidean projections onto the ADMM constraint sets.

Each projection is a small pure function of a weight tensor that returns a
`Projection`: the projected tensor and the boolean mask of the entries it
keeps. A new constraint (quantization levels, N:M, whole filters) is one more
function with the same shape, so the regularizer, callback and masks code
never changes.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf


class Projection(NamedTuple):
  values: tf.Tensor  # the projected tensor, same shape and dtype as the input
  mask: tf.Tensor  # bool, True where `values` keeps an entry


def keep_top_k(weights, k, allowed=None) -> Projection:
  """Keeps the `k` entries of largest magnitude and zeroes the rest.

  This is the projection onto {W : at most k nonzeros}. Exactly `k` entries
  survive (even if some of them are 0); among equal magnitudes the entry with
  the lower flat (row-major) index wins, so the result is deterministic.

  Args:
    weights: a float tensor of any shape.
    k: how many entries to keep, 0 <= k <= weights.size.
    allowed: optional bool tensor of the same shape. Entries outside it are
      never kept (they were pruned at an earlier stage), so `k` must not
      exceed its number of True entries.

  Returns:
    A `Projection`.
  """
  projection, = keep_top_k_nested(weights, [k], allowed)
  return projection


def keep_top_k_nested(weights, ks, allowed=None) -> list:
  """`keep_top_k` for several counts at once, from one ranking.

  Returns one `Projection` per entry of `ks`, each equal to
  `keep_top_k(weights, k, allowed)`; the kept sets are nested (a smaller k
  keeps a subset). A gradual ramp needs two at every prune: the weights kept
  now and the Z-step's target further ahead.
  """
  weights = tf.convert_to_tensor(weights)
  size = weights.shape.num_elements()
  ks = [int(k) for k in ks]
  for k in ks:
    if not 0 <= k <= size:
      raise ValueError(f'keep_top_k: k={k} is outside [0, {size}] for a '
                       f'tensor of shape {weights.shape}.')
  values = weights.numpy()
  scores = np.abs(values).ravel()
  candidates = scores
  if allowed is not None:
    allowed = np.asarray(allowed, bool).ravel()
    candidates = scores[allowed]
    if max(ks) > candidates.size:
      raise ValueError(f'keep_top_k: cannot keep {max(ks)} entries when the '
                       f'mask allows only {candidates.size}; targets must not '
                       'shrink the kept set below what earlier stages kept.')
  # A linear-time selection among the allowed entries only (a full sort took
  # ~30 ms on a 235k kernel, paid at every prune of a ramp): everything above
  # the k-th largest score, then as many entries equal to it as fit, lowest
  # index first.
  positions = sorted({candidates.size - k for k in ks if k})
  ranked = np.partition(candidates, positions) if positions else candidates
  projections = []
  for k in ks:
    flat_mask = np.zeros(size, bool)
    if k:
      kth = ranked[candidates.size - k]
      flat_mask = scores > kth
      ties = scores == kth
      if allowed is not None:
        flat_mask &= allowed
        ties &= allowed
      flat_mask[np.flatnonzero(ties)[:k - flat_mask.sum()]] = True
    mask = flat_mask.reshape(values.shape)
    projections.append(Projection(
        tf.constant(np.where(mask, values, np.zeros_like(values))),
        tf.constant(mask)))
  return projections
