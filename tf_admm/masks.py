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
  quantization levels).

  With `scale_axes`, a group of entries (those sharing an index along the
  other axes: a channel) whose every kept entry is held moves together
  instead: to s * held_values, s the least-squares fit of w to them (the
  projection onto that line after the optimizer's step), so only the
  group's scale trains, its codes fixed.
  """

  def __init__(self, mask, inner=None, held=None, held_values=None,
               scale_axes=None):
    self.mask = mask
    self.inner = inner
    self.held = held
    self.held_values = held_values
    self.scale_axes = scale_axes

  def __call__(self, weight):
    if self.inner is not None:
      weight = self.inner(weight)
    weight = weight * tf.cast(self.mask, weight.dtype)
    if self.held is not None:
      held = self.held > 0
      values = tf.cast(self.held_values, weight.dtype)
      if self.scale_axes is not None:
        values = values * self._scale(weight, held, values)
      weight = tf.where(held, values, weight)
    return weight

  def _scale(self, weight, held, values):
    axes = list(self.scale_axes)
    on_held = values * tf.cast(held, values.dtype)
    fit = (tf.reduce_sum(weight * on_held, axes, keepdims=True) /
           tf.reduce_sum(values * on_held, axes, keepdims=True))
    all_held = tf.reduce_all(held | (self.mask <= 0), axes, keepdims=True)
    return tf.where(all_held & tf.math.is_finite(fit), fit,
                    tf.ones_like(fit))


def hold_mask(variable, mask, held=None, held_values=None,
              scale_axes=None) -> None:
  """Makes every optimizer step leave `variable` zero where `mask` is 0 (and
  at `held_values` where `held` is 1, scaled along `scale_axes` if given:
  see `MaskConstraint`).

  Keeps any constraint the variable already had (applied first). Idempotent
  for the same mask.
  """
  current = variable.constraint
  if isinstance(current, MaskConstraint) and current.mask is mask:
    return
  keras_compat.set_constraint(
      variable, MaskConstraint(mask, inner=current, held=held,
                               held_values=held_values,
                               scale_axes=scale_axes))
