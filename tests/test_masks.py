import numpy as np
import tensorflow as tf

from tf_admm import masks
from tf_admm.keras_compat import keras


def test_mask_constraint_zeroes_after_the_inner_constraint():
  mask = tf.Variable([[1.0, 0.0], [0.0, 1.0]])
  constraint = masks.MaskConstraint(mask, inner=keras.constraints.NonNeg())
  got = constraint(tf.constant([[-1.0, 2.0], [3.0, 4.0]]))
  np.testing.assert_array_equal(got.numpy(), [[0.0, 0.0], [0.0, 4.0]])
  mask.assign([[1.0, 1.0], [1.0, 1.0]])  # read at every call
  np.testing.assert_array_equal(
      constraint(tf.constant([[-1.0, 2.0], [3.0, 4.0]])).numpy(),
      [[0.0, 2.0], [3.0, 4.0]])


def test_hold_mask_keeps_the_variables_constraint_and_is_idempotent():
  layer = keras.layers.Dense(2, kernel_constraint='non_neg')
  layer.build((None, 2))
  mask = tf.Variable(np.array([[1, 0], [1, 1]], np.float32))
  masks.hold_mask(layer.kernel, mask)
  masks.hold_mask(layer.kernel, mask)
  held = layer.kernel.constraint
  assert isinstance(held, masks.MaskConstraint) and held.mask is mask
  assert isinstance(held.inner, keras.constraints.NonNeg)  # not nested twice
  optimizer = keras.optimizers.SGD(1.0)
  layer.kernel.assign([[1.0, 1.0], [1.0, 1.0]])
  optimizer.apply_gradients([(tf.constant([[2.0, -1.0], [-1.0, -1.0]]),
                              layer.kernel)])
  np.testing.assert_array_equal(layer.kernel.numpy(),
                                [[0.0, 0.0], [2.0, 2.0]])


def test_the_mask_holds_under_mixed_precision():
  keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    layer = keras.layers.Dense(2)
    layer.build((None, 2))
  finally:
    keras.mixed_precision.set_global_policy('float32')
  mask = tf.Variable(np.array([[1, 0], [0, 1]], np.float32))
  masks.hold_mask(layer.kernel, mask)  # an AutoCastVariable
  layer.kernel.assign([[1.0, 1.0], [1.0, 1.0]])
  keras.optimizers.SGD(1.0).apply_gradients(
      [(tf.constant([[1.0, 1.0], [1.0, 1.0]]), layer.kernel)])
  np.testing.assert_array_equal(layer.kernel.numpy(), [[0.0, 0.0], [0.0, 0.0]])


def test_held_channels_move_together_to_the_least_squares_scale():
  """Columns (channels) whose kept entries are all held become s * values,
  s fitted to the weight; a partly held column keeps its held values."""
  rng = np.random.default_rng(0)
  values = np.sign(rng.normal(size=(5, 3))).astype(np.float32) * 0.5
  mask = np.ones((5, 3), np.float32)
  mask[0, 0] = 0  # pruned: not held, yet column 0 counts as all held
  values[0, 0] = 0
  held = mask.copy()
  held[2, 2] = 0  # column 2 only partly held
  constraint = masks.MaskConstraint(tf.Variable(mask), held=tf.Variable(held),
                                    held_values=tf.Variable(values),
                                    scale_axes=(0,))
  w = rng.normal(size=(5, 3)).astype(np.float32)
  got = constraint(tf.constant(w)).numpy()
  for column in (0, 1):
    v, h = values[:, column], held[:, column] > 0
    scale = np.dot(w[h, column], v[h]) / np.dot(v[h], v[h])
    np.testing.assert_allclose(got[:, column], scale * v, rtol=1e-6)
  want = np.where(held[:, 2] > 0, values[:, 2], w[:, 2])
  np.testing.assert_allclose(got[:, 2], want, rtol=1e-6)
  # Without scale_axes every held entry stays where it is.
  fixed = masks.MaskConstraint(tf.Variable(mask), held=tf.Variable(held),
                               held_values=tf.Variable(values))
  np.testing.assert_array_equal(
      fixed(tf.constant(w)).numpy(),
      np.where(held > 0, values, w * mask))
