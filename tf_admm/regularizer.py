"""The ADMM penalty rho/2 * ||W - Z + U||^2 as a Keras regularizer."""

import tensorflow as tf
import tf_keras as keras

from tf_admm import masks
from tf_admm import projections
from tf_admm import registration


@registration.register
class AdmmRegularizer(keras.regularizers.Regularizer,
                      tf.__internal__.tracking.AutoTrackable):
  """The augmented-Lagrangian term of ADMM for one weight tensor.

  Holds the ADMM state of that weight as non-trainable variables, created on
  first use with the weight's shape:
    z: the projection of W + U onto the constraint set (Z-step).
    u: the scaled dual variable (U-step).
    rho: the penalty factor, grown by the callback at each update.
    mask: 1 where the weight may be nonzero; 0 where an earlier stage pruned
      it. The regularizer installs a `MaskConstraint` on the weight it
      regularizes so masked entries stay exactly 0 after every step.
    keep: how many entries Z keeps (the current pruning target).
    stage: the progressive stage the callback is in (0 without stages).
    ramp_start: how many entries the mask allowed when a gradual ramp
      (`tf_admm.schedules.PolynomialRamp`) began, so a resumed ramp continues
      from the same curve.
    initialized: whether Z and U were set from the weights yet.

  These variables are checkpoint dependencies of the layer (through its
  `kernel_regularizer` attribute), so `tf.train.Checkpoint` and TF-format
  `save_weights` store and restore them; they are not layer weights, so the
  model's `get_weights()` is the same with or without ADMM. `get_config` keeps
  `rho` and `base` (an optional regularizer added on top, such as the L2 the
  layer had before ADMM).
  """

  def __init__(self, rho=1e-3, base=None):
    if not rho > 0:
      raise ValueError(f'AdmmRegularizer: rho must be > 0, got {rho}.')
    self._initial_rho = float(rho)
    self.base = keras.regularizers.get(base)
    self.z = self.u = self.rho = self.mask = self.keep = self.stage = None
    self.ramp_start = self.initialized = None

  @property
  def initial_rho(self) -> float:
    return self._initial_rho

  @property
  def built(self) -> bool:
    return self.z is not None

  def build(self, weight) -> None:
    """Creates the state for `weight` (a variable) and holds its mask."""
    if self.built:
      return
    shape, dtype = weight.shape, tf.float32
    # Variables may be created while a train step is being traced.
    with tf.init_scope():
      self.z = tf.Variable(tf.zeros(shape, dtype), trainable=False, name='z')
      self.u = tf.Variable(tf.zeros(shape, dtype), trainable=False, name='u')
      self.mask = tf.Variable(tf.ones(shape, dtype), trainable=False,
                              name='mask')
      self.rho = tf.Variable(self._initial_rho, trainable=False, name='rho')
      self.keep = tf.Variable(shape.num_elements(), dtype=tf.int64,
                              trainable=False, name='keep')
      self.stage = tf.Variable(0, dtype=tf.int64, trainable=False,
                               name='stage')
      self.ramp_start = tf.Variable(shape.num_elements(), dtype=tf.int64,
                                    trainable=False, name='ramp_start')
      self.initialized = tf.Variable(False, trainable=False,
                                     name='initialized')
    if isinstance(weight, tf.Variable):
      masks.hold_mask(weight, self.mask)

  def project(self, values) -> projections.Projection:
    """Euclidean projection onto this weight's constraint set.

    Keeps the `keep` largest-magnitude entries among those `mask` allows:
    the Z-step projects W + U with it, hard pruning projects W.
    """
    return projections.keep_top_k(values, int(self.keep),
                                  allowed=self.mask > 0)

  def __call__(self, weight):
    self.build(weight)
    z, u, rho = (tf.convert_to_tensor(v) for v in (self.z, self.u, self.rho))

    # The gradient by hand, from the residual the value already computed:
    # autodiff of square-and-sum costs several more passes over the weights,
    # a measurable share of a step for a small MLP.
    @tf.custom_gradient
    def admm_penalty(w):
      residual = w - z + u
      def gradient(upstream):
        return (upstream * rho) * residual
      return rho * tf.nn.l2_loss(residual), gradient  # l2_loss: sum(x^2) / 2

    penalty = admm_penalty(tf.cast(weight, tf.float32))
    if self.base is not None:
      penalty += tf.cast(self.base(weight), tf.float32)
    return penalty

  def get_config(self):
    rho = float(self.rho.numpy()) if self.built else self._initial_rho
    return {'rho': rho, 'base': keras.regularizers.serialize(self.base)
                                if self.base is not None else None}
