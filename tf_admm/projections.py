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
  weights = tf.convert_to_tensor(weights)
  size = weights.shape.num_elements()
  k = int(k)
  if not 0 <= k <= size:
    raise ValueError(f'keep_top_k: k={k} is outside [0, {size}] for a tensor '
                     f'of shape {weights.shape}.')
  scores = np.abs(weights.numpy()).ravel()
  if allowed is not None:
    allowed = np.asarray(allowed, bool).ravel()
    if k > allowed.sum():
      raise ValueError(f'keep_top_k: cannot keep {k} entries when the mask '
                       f'allows only {allowed.sum()}; targets must not shrink '
                       'the kept set below what earlier stages kept.')
    # Magnitudes are >= 0, so -1 ranks every disallowed entry last.
    scores = np.where(allowed, scores, -1.0)
  flat_mask = np.zeros(size, bool)
  if k:
    # A linear-time selection (a full sort took ~30 ms on a 235k kernel, paid
    # at every prune of a ramp): everything above the k-th largest score,
    # then as many entries equal to it as fit, lowest index first.
    kth = np.partition(scores, size - k)[size - k]
    flat_mask = scores > kth
    flat_mask[np.flatnonzero(scores == kth)[:k - flat_mask.sum()]] = True
  mask = tf.reshape(tf.constant(flat_mask), weights.shape)
  return Projection(tf.where(mask, weights, tf.zeros_like(weights)), mask)
