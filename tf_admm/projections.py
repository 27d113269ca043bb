"""Euclidean projections onto the ADMM constraint sets.

Each projection is a small pure function of a weight tensor that returns a
`Projection`: the projected tensor and the boolean mask of the entries it
keeps. A new constraint (quantization levels, N:M, whole filters) is one more
function with the same shape, so the regularizer, callback and masks code
never changes.
"""

from typing import NamedTuple

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
  scores = tf.reshape(tf.abs(weights), [-1])
  if allowed is not None:
    allowed = tf.reshape(tf.cast(allowed, tf.bool), [-1])
    num_allowed = int(tf.reduce_sum(tf.cast(allowed, tf.int32)))
    if k > num_allowed:
      raise ValueError(f'keep_top_k: cannot keep {k} entries when the mask '
                       f'allows only {num_allowed}; targets must not shrink '
                       'the kept set below what earlier stages kept.')
    # Magnitudes are >= 0, so -1 ranks every disallowed entry last.
    scores = tf.where(allowed, scores, -tf.ones_like(scores))
  # top_k is stable: equal scores come out in increasing index order.
  _, kept_indices = tf.math.top_k(scores, k=k)
  flat_mask = tf.scatter_nd(kept_indices[:, None], tf.ones([k], tf.bool),
                            [size])
  mask = tf.reshape(flat_mask, weights.shape)
  return Projection(tf.where(mask, weights, tf.zeros_like(weights)), mask)
