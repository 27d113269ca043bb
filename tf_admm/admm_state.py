"""The ADMM steps on one weight as pure functions over a typed state, as
optax's transforms are: each takes the state and the weight's values and
returns a new state (and what it changed), touching no Keras variable.
`tf_admm.regularizer` keeps the state in variables Keras saves and calls
these between training steps; the callback decides when.

  restart       Z = Proj(W), U = 0, rho back to its initial value
  update        Z <- Proj(W + U), U <- U + W - Z, rho grown while the
                constraint still binds
  hard_project  W <- Proj(W); the entries it zeroes stay zero from then on;
                with levels, a share more of the kept entries held on them
  measure       the sums the callback's metrics are made of

`constraint` is the one in force at the schedule's progress (its `keep`
moved along the ramp); `channels` (bool per output channel), where given,
are chosen for a group of tied weights (`tf_admm.channel_coupling`) and
replace the constraint's own choice.
"""

import dataclasses
from typing import Optional

import numpy as np

from tf_admm import projections


@dataclasses.dataclass(frozen=True)
class AdmmState:
  """The state of one weight's ADMM, shaped like the weight.

    z, u: the projection target and the scaled dual variable.
    rho: the penalty factor.
    mask: 1 where the weight may be nonzero, 0 where a hard prune removed
      it.
  and, for a constraint with levels (`tf_admm.constraints.Quantize`):
    levels: the levels Z and hard projections round to, fitted at each
      projection until the first weights are held, fixed from then on.
    held, held_values: 1 where a hard projection fixed the weight on its
      level, and that value.
  """
  z: np.ndarray
  u: np.ndarray
  rho: float
  mask: np.ndarray
  levels: Optional[np.ndarray] = None
  held: Optional[np.ndarray] = None
  held_values: Optional[np.ndarray] = None

  @property
  def allowed(self) -> np.ndarray:
    return self.mask > 0

  @property
  def levels_held(self) -> bool:
    """Whether weights are held on the levels, which are then fixed."""
    return self.held is not None and bool(np.any(self.held > 0))

  @property
  def all_held(self) -> bool:
    """Whether every kept entry is held on its level."""
    return self.held is not None and np.array_equal(self.held > 0,
                                                    self.mask > 0)


def project(state: AdmmState, constraint, values, channels=None):
  """Proj(values) onto `constraint`, within the mask (on the held levels
  once there are any; onto `channels` where given)."""
  values = np.asarray(values)
  if channels is not None:
    return projections.keep_channel_set(values, channels, constraint.axis,
                                        state.allowed)
  if state.levels_held:
    return constraint.project(values, state.allowed, levels=state.levels)
  return constraint.project(values, state.allowed)


def _finish_if_scales_train(state: AdmmState, constraint,
                            w) -> AdmmState:
  """Once every kept entry is held and the held scales train, ADMM has
  nothing left to do, and its Z (rounded to the levels fixed at the hold)
  would pull the scales back: Z = W, U = 0, rho = 0."""
  if constraint.held_scale_axes(w.ndim) is None or not state.all_held:
    return state
  return dataclasses.replace(state, z=w.copy(), u=np.zeros_like(state.u),
                             rho=0.0)


def restart(state: AdmmState, constraint, w, initial_rho: float,
            channels=None) -> AdmmState:
  """Fresh ADMM: Z = Proj(W), U = 0, rho = `initial_rho`."""
  state = dataclasses.replace(
      state, z=project(state, constraint, w, channels).values,
      u=np.zeros_like(state.u), rho=float(initial_rho))
  return _finish_if_scales_train(state, constraint, w)


def update(state: AdmmState, constraint, w, rho_growth: float = 1.0,
           channels=None):
  """(new state, ||Z_new - Z_old||, the step's rho): Z <- Proj(W + U),
  U <- U + W - Z, and rho <- rho * rho_growth while the constraint still
  binds (once the projection moves nothing, a growing rho would only reach
  inf)."""
  target = w + state.u
  z = project(state, constraint, target, channels).values
  rho = state.rho * (rho_growth if not np.array_equal(z, target) else 1.0)
  new = dataclasses.replace(state, z=z, u=state.u + w - z, rho=rho)
  return (_finish_if_scales_train(new, constraint, w),
          float(np.linalg.norm(z - state.z)), rho)


def _more_held(state: AdmmState, w, projection, progress) -> np.ndarray:
  """The held entries after holding the kept entries nearest their levels,
  up to the fraction `progress` of those kept."""
  kept = projection.mask
  held = (state.held > 0) & kept
  wanted = int(np.ceil(min(max(progress, 0.0), 1.0) * np.count_nonzero(kept)
                       - 1e-9))
  more = wanted - np.count_nonzero(held)
  if more > 0:
    distance = np.where(kept & ~held, np.abs(w - projection.values), np.inf)
    nearest = np.argsort(distance, axis=None, kind='stable')[:more]
    held.flat[nearest] = True
  return held


def hard_project(state: AdmmState, constraint, w, progress: float,
                 channels=None):
  """(new state, new W): W <- Proj(W), its zeros the new mask. With levels,
  only the held entries move onto them: the fraction `progress` of the kept
  entries, those nearest their levels first (the iterative quantization of
  the papers); entries held before keep their values (or, where their
  scales train, their current ones: the same codes)."""
  if state.levels is None:
    projection = project(state, constraint, w, channels)
    return (dataclasses.replace(
        state, mask=projection.mask.astype(np.float32)), projection.values)
  levels = (state.levels if state.levels_held else
            constraint.fit_levels(w, state.allowed))
  projection = constraint.project(w, state.allowed, levels=levels)
  before = (state.held_values if constraint.held_scale_axes(w.ndim) is None
            else w)
  values = np.where(state.held > 0, before, projection.values)
  held = _more_held(state, w, projection._replace(values=values), progress)
  new = dataclasses.replace(
      state, levels=levels, mask=projection.mask.astype(np.float32),
      held=held.astype(np.float32), held_values=np.where(held, values, 0.0))
  return new, np.where(held, values, w * projection.mask)


def measure(state: AdmmState, w) -> dict:
  """Sums over this weight that `tf_admm.callback` turns into metrics."""
  return {'gap': float(np.sum((w - state.z)**2)),
          'norm': float(np.sum(w**2)),
          'z_zeros': int(np.count_nonzero(state.z == 0)),
          'size': state.z.size}
