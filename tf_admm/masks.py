"""Holding pruned weights at exactly zero.

Both masked ADMM and masked retraining need pruned entries to stay 0 after
every optimizer step, whatever the optimizer's momentum says. Keras
optimizers apply a variable's `constraint` right after each update, so a
`MaskConstraint` on the weight variable does exactly that, inside the
compiled train step.
"""

import tensorflow as tf

from tf_admm import keras_compat
from tf_admm.keras_compat import keras


class MaskConstraint(keras.constraints.Constraint):
  """w -> inner(w) * mask, with `mask` a variable read at every step; and,
  with `held`, w -> held_values where `held` is 1 (weights fixed on their
  quantization levels)."""

  def __init__(self, mask, inner=None, held=None, held_values=None):
    self.mask = mask
    self.inner = inner
    self.held = held
    self.held_values = held_values

  def __call__(self, weight):
    if self.inner is not None:
      weight = self.inner(weight)
    weight = weight * tf.cast(self.mask, weight.dtype)
    if self.held is not None:
      weight = tf.where(self.held > 0, tf.cast(self.held_values, weight.dtype),
                        weight)
    return weight


def hold_mask(variable, mask, held=None, held_values=None) -> None:
  """Makes every optimizer step leave `variable` zero where `mask` is 0 (and
  at `held_values` where `held` is 1).

  Keeps any constraint the variable already had (applied first). Idempotent
  for the same mask.
  """
  current = variable.constraint
  if isinstance(current, MaskConstraint) and current.mask is mask:
    return
  keras_compat.set_constraint(
      variable, MaskConstraint(mask, inner=current, held=held,
                               held_values=held_values))
