"""The ADMM penalty rho/2 * ||W - Z + U||^2 and the ADMM state it reads."""

from typing import Optional
import warnings

import numpy as np
import tensorflow as tf

from tf_admm import admm_state
from tf_admm import constraints as constraints_lib
from tf_admm import keras_compat
from tf_admm import masks
from tf_admm import registration
from tf_admm.keras_compat import Trackable
from tf_admm.keras_compat import keras
from tf_admm.keras_compat import keras3


class AdmmSteps:
  """The augmented-Lagrangian term of ADMM for one weight, its state, and
  the ADMM steps on them: what the regularizer classes of both Kerases share.

  The state, non-trainable variables shaped like the weight:
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
      quantization of the papers), all of them at p = 1. Where the held
      scales train (`Quantize(train_scale=True)`), held entries keep their
      current values at later holds, and once all are held the penalty is
      off (rho 0).

  `constraint` (a `tf_admm.constraints.Constraint`) is the final target; a
  schedule's `progress` in [0, 1] moves the kept count from `start_nonzeros`
  to the constraint's `keep` (`constraint_at`). The callback decides when
  each step runs; the steps are `begin`, `restart`, `update` and
  `hard_project`, and `measure` reads the state for metrics. Each reads the
  variables into an `admm_state.AdmmState`, runs the pure step of
  `tf_admm.admm_state` on it and writes the result back.

  A class built on it provides `_create_state(shape)`, which makes the
  variables with `_state_variables`, and `_new_variable`.
  """

  _keras = None  # the Keras module of the class

  def _init_admm(self, constraint, rho, base):
    if not isinstance(constraint, constraints_lib.Constraint):
      raise ValueError(f'{type(self).__name__}: expected a tf_admm constraint, '
                       f'got '
                       f'{constraint!r}.')
    if not rho > 0:
      raise ValueError(f'{type(self).__name__}: rho must be > 0, got {rho}.')
    self.constraint = constraint
    self.initial_rho = float(rho)
    self.base = self._keras.regularizers.get(base)
    # ||Z_new - Z_old|| and rho at the last Z/U step (kept through a
    # restart, so the metrics an epoch end logs describe ADMM's last step).
    self.z_change = 0.0
    self.update_rho = None
    self.z = self.u = self.rho = self.mask = None
    self.levels = self.held = self.held_values = None
    self.start_step = self.start_nonzeros = self.last_step = None
    self.warned_unstarted = False

  def _new_variable(self, name, shape, value, dtype='float32'):
    raise NotImplementedError

  def _state_variables(self, shape) -> None:
    """Creates the state for a weight of `shape`."""
    variable = self._new_variable
    self.z = variable('z', shape, 0.0)
    self.u = variable('u', shape, 0.0)
    self.mask = variable('mask', shape, 1.0)
    self.rho = variable('rho', (), self.initial_rho)
    self.start_step = variable('start_step', (), -1, 'int64')
    self.start_nonzeros = variable('start_nonzeros', (),
                                   int(np.prod(shape)), 'int64')
    self.last_step = variable('last_step', (), -1, 'int64')
    levels_shape = self.constraint.levels_shape(tuple(shape))
    if levels_shape is not None:
      self.levels = variable('levels', levels_shape, 0.0)
      self.held = variable('held', shape, 0.0)
      self.held_values = variable('held_values', shape, 0.0)

  def _create_state(self, shape) -> None:
    raise NotImplementedError

  @property
  def has_state(self) -> bool:
    return self.z is not None

  @property
  def started(self) -> bool:
    return self.has_state and int(self.start_step.numpy()) >= 0

  def prepare(self, weight) -> None:
    """Creates the state for `weight` if it has none, and holds its mask
    (a variable's; a value passed in has nothing to hold)."""
    if not self.has_state:
      self._create_state(tuple(weight.shape))
    if keras_compat.is_variable(weight):
      masks.hold_mask(weight, self.mask, self.held, self.held_values,
                      self.constraint.held_scale_axes(len(weight.shape)))

  # The ADMM steps (`tf_admm.admm_state`) on the state in the variables.

  def constraint_at(self, progress: float) -> constraints_lib.Constraint:
    """The constraint `progress` of the way from the start to the target."""
    final = self.constraint.keep
    if final is None or progress >= 1:
      return self.constraint
    start = int(self.start_nonzeros.numpy())
    return self.constraint.with_keep(
        int(round(start + (final - start) * max(progress, 0.0))))

  def state(self) -> admm_state.AdmmState:
    """The ADMM state as it is now."""
    def value(variable):
      return None if variable is None else variable.numpy()
    return admm_state.AdmmState(
        z=self.z.numpy(), u=self.u.numpy(), rho=float(self.rho.numpy()),
        mask=self.mask.numpy(), levels=value(self.levels),
        held=value(self.held), held_values=value(self.held_values))

  def _store(self, state: admm_state.AdmmState) -> None:
    for name in ('z', 'u', 'rho', 'mask', 'levels', 'held', 'held_values'):
      if getattr(state, name) is not None:
        getattr(self, name).assign(getattr(state, name))

  @property
  def levels_held(self) -> bool:
    """Whether weights are held on the levels, which are then fixed."""
    return self.held is not None and self.state().levels_held

  @property
  def all_held(self) -> bool:
    """Whether every kept entry is held on its level."""
    return self.held is not None and self.state().all_held

  def project(self, values, progress: float = 1.0, channels=None):
    """Proj(values) onto the constraint at `progress` (see
    `admm_state.project`)."""
    return admm_state.project(self.state(), self.constraint_at(progress),
                              values, channels)

  def begin(self, step: int) -> None:
    """Marks optimizer step `step` and the mask now as where ADMM starts
    (a `restart` sets Z and U)."""
    self.start_step.assign(step)
    self.start_nonzeros.assign(np.count_nonzero(self.mask.numpy()))

  def restart(self, weight, progress: float, channels=None) -> None:
    self._store(admm_state.restart(self.state(),
                                   self.constraint_at(progress),
                                   weight.numpy(), self.initial_rho,
                                   channels))

  def update(self, weight, progress: float, rho_growth: float = 1.0,
             channels=None) -> None:
    state, self.z_change, self.update_rho = admm_state.update(
        self.state(), self.constraint_at(progress), weight.numpy(),
        rho_growth, channels)
    self._store(state)

  def hard_project(self, weight, progress: float, channels=None) -> None:
    state, values = admm_state.hard_project(
        self.state(), self.constraint_at(progress), weight.numpy(), progress,
        channels)
    self._store(state)
    weight.assign(values)

  def measure(self, weight) -> dict:
    """`admm_state.measure`, with rho and the change of Z at the last Z/U
    step (rho now before the first)."""
    rho = (self.update_rho if self.update_rho is not None else
           float(self.rho.numpy()))
    return dict(admm_state.measure(self.state(), weight.numpy()), rho=rho,
                z_change=self.z_change)

  # The penalty.

  def __call__(self, weight):
    self.prepare(weight)
    self._warn_if_unstarted(weight)
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

  def _warn_if_unstarted(self, weight) -> None:
    """Warns once if the penalty is computed before `AdmmCallback` started
    ADMM (as the first batch of a fit without it does): with Z = U = 0 it
    is plain weight decay toward zero."""
    if self.warned_unstarted or keras_compat.in_symbolic_build():
      return
    with tf.init_scope():  # out of the train step's graph, to read it
      started = self.started
    if not started:
      self.warned_unstarted = True
      name = (keras_compat.variable_path(weight)
              if keras_compat.is_variable(weight) else 'a weight')
      warnings.warn(
          f'The ADMM penalty of {name} is '
          'computed before ADMM started (Z = U = 0), so it only pulls the '
          'weights toward zero: fit a model under ADMM with '
          'callbacks=[tf_admm.AdmmCallback(...)].', stacklevel=2)

  def _admm_config(self):
    return {
        'constraint': constraints_lib.serialize(self.constraint),
        'rho': self.initial_rho,
        'base': (self._keras.regularizers.serialize(self.base)
                 if self.base is not None else None),
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['constraint'] = constraints_lib.deserialize(config['constraint'])
    return cls(**config)


@registration.register
class AdmmRegularizer(AdmmSteps, keras.regularizers.Regularizer, Trackable):
  """The ADMM penalty and state of one weight of a Keras 2 (tf_keras)
  model; see `AdmmSteps`.

  The variables, created on first use, are checkpoint dependencies of the
  layer (through its regularizer attribute), so `tf.train.Checkpoint`,
  TF-format `save_weights` and `BackupAndRestore` keep them; they are not
  layer weights, so `get_weights()` is the same with or without ADMM.
  `get_config` keeps the constraint, the initial rho and `base` (a
  regularizer added on top, such as the L2 the layer had before ADMM).
  """

  _keras = keras

  def __init__(self, constraint: constraints_lib.Constraint, rho=1e-3,
               base=None):
    self._init_admm(constraint, rho, base)

  def _create_state(self, shape):
    with tf.init_scope():  # it may be called while a step is traced
      self._state_variables(shape)

  def _new_variable(self, name, shape, value, dtype='float32'):
    return tf.Variable(tf.fill(shape, tf.constant(value, dtype)),
                       trainable=False, name=name)

  def get_config(self):
    return self._admm_config()


@registration.register
class Keras3AdmmRegularizer(AdmmSteps, keras3.layers.Layer,
                            keras3.regularizers.Regularizer):
  """The ADMM penalty and state of one weight of a Keras 3 model; see
  `AdmmSteps`. `tf_admm.attach_admm` makes it for Keras 3 models.

  Keras 3 saves and restores only the state of layers, and a built layer
  takes no new variables; so the regularizer is itself a layer, which the
  regularized layer tracks through its regularizer attribute: `.keras`
  files, `save_weights` and `BackupAndRestore` keep the state, which also
  counts in that layer's `weights` and the model's `get_weights()`. It is
  built (its state made) for the weight's shape, also when a saved model
  loads.
  """

  _keras = keras3

  def __init__(self, constraint: constraints_lib.Constraint, rho=1e-3,
               base=None, **kwargs):
    super().__init__(**kwargs)
    self._init_admm(constraint, rho, base)

  def build(self, input_shape):
    self._state_variables(tuple(input_shape))

  def _create_state(self, shape):
    self.build(shape)

  def _new_variable(self, name, shape, value, dtype='float32'):
    return self.add_weight(
        shape=shape, initializer=keras3.initializers.Constant(value),
        dtype=dtype, trainable=False, name=name)

  def get_config(self):
    return dict(super().get_config(), **self._admm_config())


def admm_regularizer(weight) -> Optional[AdmmSteps]:
  """The ADMM regularizer of a `tf_admm.weights.PrunableWeight`, if any."""
  regularizer = weight.regularizer
  return regularizer if isinstance(regularizer, AdmmSteps) else None
