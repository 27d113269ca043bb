"""The ADMM penalty rho/2 * ||W - Z + U||^2 and the ADMM state it reads."""

from typing import Optional

import numpy as np
import tensorflow as tf

from tf_admm import constraints as constraints_lib
from tf_admm import masks
from tf_admm import registration
from tf_admm.keras_compat import Trackable
from tf_admm.keras_compat import keras


@registration.register
class AdmmRegularizer(keras.regularizers.Regularizer, Trackable):
  """The augmented-Lagrangian term of ADMM for one weight, and its state.

  It owns the ADMM state of that weight, as non-trainable variables created
  on first use with the weight's shape, and the ADMM steps on them:
    z, u: the projection target and the scaled dual variable.
    rho: the penalty factor.
    mask: 1 where the weight may be nonzero, 0 where a hard prune removed
      it. The regularizer puts a `MaskConstraint` on the weight, so masked
      entries are exactly 0 after every optimizer step.
    start_step: the optimizer step at which ADMM began (-1: not yet); a
      schedule's position is the optimizer's steps since then.
    start_nonzeros: the entries the mask allowed then, where a ramp starts.
    last_step: the optimizer step at the last epoch end under ADMM; an
      optimizer that has taken fewer is not the one the schedule counted.
  and, for a constraint with levels (`tf_admm.constraints.Quantize`):
    levels: the levels Z and hard projections round to, fitted at each
      projection until the first weights are held, fixed from then on.
    held, held_values: 1 where a hard projection fixed the weight on its
      level, and that value; the `MaskConstraint` puts held weights back on
      it after every optimizer step. A hard projection at `progress` p holds
      the fraction p of the kept entries nearest their levels (the iterative
      quantization of the papers), all of them at p = 1.

  `constraint` (a `tf_admm.constraints.Constraint`) is the final target; a
  schedule's `progress` in [0, 1] moves the kept count from `start_nonzeros`
  to the constraint's `keep` (`constraint_at`). The callback decides when
  each step runs; the steps are `begin`, `restart`, `update` and
  `hard_project`, and `measure` reads the state for metrics.

  The variables are checkpoint dependencies of the layer (through its
  regularizer attribute), so `tf.train.Checkpoint`, TF-format
  `save_weights` and `BackupAndRestore` keep them; they are not layer
  weights, so `get_weights()` is the same with or without ADMM. `get_config`
  keeps the constraint, the initial rho and `base` (a regularizer added on
  top, such as the L2 the layer had before ADMM).
  """

  def __init__(self, constraint: constraints_lib.Constraint, rho=1e-3,
               base=None):
    if not isinstance(constraint, constraints_lib.Constraint):
      raise ValueError(f'AdmmRegularizer: expected a tf_admm constraint, got '
                       f'{constraint!r}.')
    if not rho > 0:
      raise ValueError(f'AdmmRegularizer: rho must be > 0, got {rho}.')
    self.constraint = constraint
    self.initial_rho = float(rho)
    self.base = keras.regularizers.get(base)
    self.z_change = 0.0  # ||Z_new - Z_old|| at the last Z-step
    self.z = self.u = self.rho = self.mask = None
    self.levels = self.held = self.held_values = None
    self.start_step = self.start_nonzeros = self.last_step = None

  @property
  def built(self) -> bool:
    return self.z is not None

  @property
  def started(self) -> bool:
    return self.built and int(self.start_step.numpy()) >= 0

  def build(self, weight) -> None:
    """Creates the state for `weight` (a variable) and holds its mask."""
    if self.built:
      return
    shape = weight.shape
    # Variables may be created while a train step is being traced.
    with tf.init_scope():
      self.z = tf.Variable(tf.zeros(shape), trainable=False, name='z')
      self.u = tf.Variable(tf.zeros(shape), trainable=False, name='u')
      self.mask = tf.Variable(tf.ones(shape), trainable=False, name='mask')
      self.rho = tf.Variable(self.initial_rho, trainable=False, name='rho')
      self.start_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                    name='start_step')
      self.start_nonzeros = tf.Variable(
          shape.num_elements(), dtype=tf.int64, trainable=False,
          name='start_nonzeros')
      self.last_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                   name='last_step')
      levels_shape = self.constraint.levels_shape(tuple(shape))
      if levels_shape is not None:
        self.levels = tf.Variable(tf.zeros(levels_shape), trainable=False,
                                  name='levels')
        self.held = tf.Variable(tf.zeros(shape), trainable=False, name='held')
        self.held_values = tf.Variable(tf.zeros(shape), trainable=False,
                                       name='held_values')
    if isinstance(weight, tf.Variable):
      masks.hold_mask(weight, self.mask, self.held, self.held_values)

  # The ADMM steps.

  def constraint_at(self, progress: float) -> constraints_lib.Constraint:
    """The constraint `progress` of the way from the start to the target."""
    final = self.constraint.keep
    if final is None or progress >= 1:
      return self.constraint
    start = int(self.start_nonzeros.numpy())
    return self.constraint.with_keep(
        int(round(start + (final - start) * max(progress, 0.0))))

  @property
  def levels_held(self) -> bool:
    """Whether weights are held on the levels, which are then fixed."""
    return self.held is not None and bool(tf.reduce_any(self.held > 0))

  def project(self, values, progress: float = 1.0):
    """Proj(values) onto the constraint at `progress`, within the mask (on
    the held levels once there are any)."""
    constraint = self.constraint_at(progress)
    allowed = self.mask.numpy() > 0
    if self.levels_held:
      return constraint.project(np.asarray(values), allowed,
                                levels=self.levels.numpy())
    return constraint.project(np.asarray(values), allowed)

  def begin(self, step: int) -> None:
    """Marks optimizer step `step` and the mask now as where ADMM starts
    (a `restart` sets Z and U)."""
    self.start_step.assign(step)
    self.start_nonzeros.assign(int(tf.math.count_nonzero(self.mask)))

  def restart(self, weight, progress: float) -> None:
    """Fresh ADMM: Z = Proj(W), U = 0, rho back to its initial value."""
    self.z.assign(self.project(weight.numpy(), progress).values)
    self.u.assign(tf.zeros_like(self.u))
    self.rho.assign(self.initial_rho)
    self.z_change = 0.0

  def update(self, weight, progress: float, rho_growth: float = 1.0) -> None:
    """Z <- Proj(W + U), U <- U + W - Z, rho <- rho * rho_growth."""
    w = weight.numpy()
    z = self.project(w + self.u.numpy(), progress).values
    self.z_change = float(np.linalg.norm(z - self.z.numpy()))
    self.u.assign_add(w - z)
    self.z.assign(z)
    self.rho.assign(self.rho * rho_growth)

  def hard_project(self, weight, progress: float) -> None:
    """W <- Proj(W); the entries it zeroes stay zero from now on. With
    levels, only the held entries (see the class) move onto them."""
    w = weight.numpy()
    if self.levels is None:
      projection = self.project(w, progress)
      weight.assign(projection.values)
      self.mask.assign(projection.mask.astype(np.float32))
      return
    constraint, allowed = self.constraint_at(progress), self.mask.numpy() > 0
    if not self.levels_held:
      self.levels.assign(constraint.fit_levels(w, allowed))
    projection = constraint.project(w, allowed, levels=self.levels.numpy())
    self.mask.assign(projection.mask.astype(np.float32))
    # Entries held before keep their values, wherever W has gone since.
    values = np.where(self.held.numpy() > 0, self.held_values.numpy(),
                      projection.values)
    held = self._more_held(w, projection._replace(values=values), progress)
    self.held.assign(held.astype(np.float32))
    self.held_values.assign(np.where(held, values, 0.0))
    weight.assign(np.where(held, values, w * projection.mask))

  def _more_held(self, w, projection, progress):
    """The held entries after holding the kept entries nearest their levels,
    up to the fraction `progress` of those kept."""
    kept = projection.mask
    held = (self.held.numpy() > 0) & kept
    wanted = int(np.ceil(min(max(progress, 0.0), 1.0) * np.count_nonzero(kept)
                         - 1e-9))
    more = wanted - np.count_nonzero(held)
    if more > 0:
      distance = np.where(kept & ~held, np.abs(w - projection.values), np.inf)
      nearest = np.argsort(distance, axis=None, kind='stable')[:more]
      held.flat[nearest] = True
    return held

  def measure(self, weight) -> dict:
    """Sums over this weight that `tf_admm.callback` turns into metrics."""
    w, z = weight.numpy(), self.z.numpy()
    return {'gap': float(np.sum((w - z)**2)), 'norm': float(np.sum(w**2)),
            'z_zeros': int(np.count_nonzero(z == 0)), 'size': z.size,
            'rho': float(self.rho.numpy()), 'z_change': self.z_change}

  # The penalty.

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
    return {
        'constraint': keras.utils.serialize_keras_object(self.constraint),
        'rho': self.initial_rho,
        'base': (keras.regularizers.serialize(self.base)
                 if self.base is not None else None),
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['constraint'] = keras.utils.deserialize_keras_object(
        config['constraint'])
    return cls(**config)


def admm_regularizer(weight) -> Optional[AdmmRegularizer]:
  """The AdmmRegularizer of a `tf_admm.weights.PrunableWeight`, if any."""
  regularizer = weight.regularizer
  return regularizer if isinstance(regularizer, AdmmRegularizer) else None
