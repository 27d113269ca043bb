"""The ADMM Z- and U-steps as a Keras callback."""

from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_admm import attach
from tf_admm import projections
from tf_admm import schedules
from tf_admm import targets


class AdmmCallback(keras.callbacks.Callback):
  """Runs the Z- and U-steps of ADMM between W-steps of `model.fit`.

  At the start of training (or after the first step, for a model that `fit`
  builds), each layer under ADMM gets its target and, unless its state was
  restored from a checkpoint, Z = Proj(W) and U = 0. Then every
  `update_every_epochs` epochs (or `update_every_steps` steps):

    Z <- Proj(W + U),  U <- U + W - Z,  rho <- rho * rho_growth.

  After each epoch (and each step-based update) it writes the latest values to
  `logs`, so History, CSVLogger and TensorBoard listed after it see them:
    admm_primal_residual   ||W - Z|| / ||W||, all ADMM layers together
    admm_z_change          ||Z_new - Z_old||
    admm_rho               rho (the mean over layers)
    admm_z_sparsity        fraction of zeros in Z
  and the same four per layer as `<key>/<layer name>`.

  Targets are given as in `tf_admm.keep_counts` (`target`, `per_layer`,
  `min_keep_ratio`), over the layers under ADMM, and resolved against the
  weights when training starts.

  Progressive pruning inside one `fit`: with `stage_rates` (increasing
  compression rates, the last equal to the targets' overall rate) and
  `epochs_per_stage`, ADMM runs at each stage's rate in turn, the per-layer
  targets scaled by one factor (`tf_admm.targets.rescale`). At each stage
  boundary the weights are hard-pruned to the stage's target, those zeros
  are held for the rest of training (masked ADMM), and Z, U and rho restart.
  `logs` then also carries `admm_stage`.

  Gradual pruning inside one `fit`: with `ramp` (a
  `tf_admm.schedules.PolynomialRamp`) each layer moves from the weights its
  mask allows at the start to its target along the ramp, counted in optimizer
  steps (so a fit resumed by BackupAndRestore continues the same curve). Every
  `ramp.prune_every_steps` steps the weights are hard-pruned to the ramp's
  current count and the Z-step aims `ramp.lookahead_steps` further along, so
  ADMM pulls the next weights to go toward zero before they are cut. Each of
  these small prunes is a stage boundary: Z, U and rho restart. Z/U updates
  between them (`update_every_*`) are optional.
  """

  def __init__(self,
               target: Optional[targets.Target] = None,
               per_layer: Optional[Mapping[targets.LayerKey,
                                           targets.Target]] = None,
               min_keep_ratio: float = 0.001,
               update_every_epochs: Optional[int] = None,
               update_every_steps: Optional[int] = None,
               rho_growth: float = 1.0,
               stage_rates: Optional[Sequence[float]] = None,
               epochs_per_stage: Optional[int] = None,
               ramp: Optional[schedules.PolynomialRamp] = None,
               verbose: int = 0):
    super().__init__()
    intervals = [i for i in (update_every_epochs, update_every_steps)
                 if i is not None]
    if len(intervals) > 1 or not (intervals or ramp):
      raise ValueError('Give exactly one of update_every_epochs and '
                       'update_every_steps (optional with a ramp, whose '
                       'prunes restart ADMM).')
    for interval in intervals:
      if not (isinstance(interval, int) and interval >= 1):
        raise ValueError(f'The update interval must be an integer >= 1, got '
                         f'{interval!r}.')
    if not rho_growth >= 1.0:
      raise ValueError(f'rho_growth must be >= 1, got {rho_growth}.')
    if target is None and not per_layer:
      raise ValueError('AdmmCallback needs a `target`, `per_layer` targets, or '
                       'both.')
    if ramp is not None and stage_rates is not None:
      raise ValueError('Give a ramp or stage_rates, not both: a ramp replaces '
                       'a few big stages by many small ones.')
    if (stage_rates is None) != (epochs_per_stage is None):
      raise ValueError('Give stage_rates and epochs_per_stage together.')
    if stage_rates is not None:
      stage_rates = [float(r) for r in stage_rates]
      if not all(1 <= a < b for a, b in zip([1.0] + stage_rates,
                                            stage_rates)):
        raise ValueError(f'stage_rates must increase, each > 1; got '
                         f'{stage_rates}.')
      if not (isinstance(epochs_per_stage, int) and epochs_per_stage >= 1):
        raise ValueError(f'epochs_per_stage must be an integer >= 1, got '
                         f'{epochs_per_stage!r}.')
      if not update_every_epochs:
        raise ValueError('Stages are counted in epochs: use '
                         'update_every_epochs with stage_rates.')
    self.ramp = ramp
    self.stage_rates = stage_rates
    self.epochs_per_stage = epochs_per_stage
    self.target = target
    self.per_layer = dict(per_layer or {})
    self.min_keep_ratio = min_keep_ratio
    self.update_every_epochs = update_every_epochs
    self.update_every_steps = update_every_steps
    self.rho_growth = rho_growth
    self.verbose = verbose
    self.updates = 0
    self._supports_tf_logs = True  # never pull batch logs to the host
    self._stage_keep = []  # per stage: {layer name: weights kept}
    self._pairs = []
    self._steps = 0
    self._first_step = 0  # optimizer steps taken before this fit
    self._ready = False  # targets resolved and Z, U set for this fit
    self._z_change = {}  # per layer, at the last Z-step (0 after a restart)

  def on_train_begin(self, logs=None):
    self._pairs = attach.admm_layers(self.model)
    if not self._pairs:
      raise ValueError(
          f'Model {self.model.name!r} has no AdmmRegularizer: create it with '
          'tf_admm.attach_admm(model, layers) before fitting with '
          'AdmmCallback.')
    self._steps = 0
    self._first_step = int(self.model.optimizer.iterations)
    self._ready = False
    if self.model.built:
      self._initialize()

  def _initialize(self):
    final = targets.keep_counts(
        self.model, self.target, self.per_layer, self.min_keep_ratio,
        layers=[layer for layer, _ in self._pairs])
    self._stage_keep = [final]
    if self.stage_rates:
      self._stage_keep = self._scaled_stages(final)
    for layer, regularizer in self._pairs:
      regularizer.build(layer.kernel)
      if not bool(regularizer.initialized):
        regularizer.stage.assign(0)
        regularizer.ramp_start.assign(
            int(tf.math.count_nonzero(regularizer.mask)))
        self._start_stage(layer, regularizer)
      else:  # restored: Z and U continue, the count follows this fit's steps
        regularizer.keep.assign(self._z_keep(layer, regularizer))
    self._z_change = {layer.name: 0.0 for layer, _ in self._pairs}
    self._ready = True

  def _scaled_stages(self, final):
    sizes = {l.name: targets.kernel_size(l) for l, _ in self._pairs}
    final_rate = sum(sizes.values()) / sum(final.values())
    if abs(final_rate / self.stage_rates[-1] - 1) > 0.01:
      raise ValueError(
          f'The last of stage_rates ({self.stage_rates[-1]}) must equal the '
          f'overall rate of the targets ({final_rate:.2f}).')
    ratios = {name: final[name] / sizes[name] for name in sizes}
    stages = []
    for rate in self.stage_rates:
      scaled = targets.rescale(ratios, sizes, rate)
      stages.append({name: max(1, round(scaled[name] * sizes[name]))
                     for name in sizes})
    stages[-1] = final
    return stages

  def _ramp_keep(self, layer, regularizer, step):
    return self.ramp.keep(int(regularizer.ramp_start),
                          self._stage_keep[0][layer.name], step)

  @property
  def _step(self):
    """Optimizer steps taken, this fit and any before it."""
    return self._first_step + self._steps

  def _z_keep(self, layer, regularizer):
    """The count the Z-step projects to now: the stage's target, or the
    ramp's count `lookahead_steps` ahead."""
    if self.ramp is None:
      return self._stage_keep[int(regularizer.stage)][layer.name]
    return self._ramp_keep(layer, regularizer,
                           self._step + self.ramp.lookahead_steps)

  @staticmethod
  def _hard_prune(layer, regularizer, pruned=None):
    """W <- Proj(W) (or the given projection of W); the pruned entries
    stay zero from now on."""
    if pruned is None:
      pruned = regularizer.project(layer.kernel)
    layer.kernel.assign(pruned.values)
    regularizer.mask.assign(tf.cast(pruned.mask, tf.float32))

  def _start_stage(self, layer, regularizer):
    """Fresh ADMM at the regularizer's stage: Z = Proj(W), U = 0, rho0."""
    regularizer.keep.assign(self._z_keep(layer, regularizer))
    self._restart(layer, regularizer,
                  regularizer.project(layer.kernel).values)

  def _restart(self, layer, regularizer, z):
    regularizer.z.assign(z)
    regularizer.u.assign(tf.zeros_like(regularizer.u))
    regularizer.rho.assign(regularizer.initial_rho)
    regularizer.initialized.assign(True)
    self._z_change[layer.name] = 0.0

  def _ramp_prune(self, layer, regularizer):
    """A small hard prune to the ramp's count now, then a restart with Z
    at its count `lookahead_steps` ahead. The ramp only shrinks, so both
    come from one ranking of the weights (`projections.keep_top_k_nested`).
    """
    keep_now = self._ramp_keep(layer, regularizer, self._step)
    keep_ahead = self._z_keep(layer, regularizer)
    pruned, ahead = projections.keep_top_k_nested(
        layer.kernel, [keep_now, keep_ahead], allowed=regularizer.mask > 0)
    self._hard_prune(layer, regularizer, pruned)
    regularizer.keep.assign(keep_ahead)
    self._restart(layer, regularizer, ahead.values)

  def _advance_stage(self):
    """Hard-prunes to the current stage and moves every layer to the next."""
    for layer, regularizer in self._pairs:
      self._hard_prune(layer, regularizer)
      regularizer.stage.assign_add(1)
      self._start_stage(layer, regularizer)

  def update(self):
    """One Z-step and U-step for every layer under ADMM, then grows rho."""
    for layer, regularizer in self._pairs:
      weight = tf.convert_to_tensor(layer.kernel)
      z_new = regularizer.project(weight + regularizer.u).values
      self._z_change[layer.name] = float(tf.norm(z_new - regularizer.z))
      regularizer.u.assign_add(weight - z_new)
      regularizer.z.assign(z_new)
      regularizer.rho.assign(regularizer.rho * self.rho_growth)
    self.updates += 1
    if self.verbose:
      logs = self._measure()
      print(f'ADMM update {self.updates}: primal residual '
            f'{logs["admm_primal_residual"]:.4f}, Z sparsity '
            f'{logs["admm_z_sparsity"]:.4f}, rho {logs["admm_rho"]:.3g}')

  def _measure(self):
    """Per-layer and overall metrics for `logs`, of the state now (measured
    only when logs are written: a ramp restarts ADMM many times an epoch)."""
    per_layer = {}
    sums = np.zeros(4)  # ||W - Z||^2, ||W||^2, zeros in Z, entries
    for layer, regularizer in self._pairs:
      weight = layer.kernel.numpy()
      z = regularizer.z.numpy()
      gap, norm = np.sum((weight - z)**2), np.sum(weight**2)
      zeros = np.count_nonzero(z == 0)
      sums += (gap, norm, zeros, z.size)
      per_layer[layer.name] = {
          'primal_residual': np.sqrt(gap / norm) if norm else 0.0,
          'z_change': self._z_change[layer.name],
          'rho': float(regularizer.rho.numpy()),
          'z_sparsity': zeros / z.size,
      }
    logs = {
        'admm_primal_residual': np.sqrt(sums[0] / sums[1]) if sums[1] else 0.0,
        'admm_z_change': float(np.sqrt(sum(
            m['z_change']**2 for m in per_layer.values()))),
        'admm_rho': float(np.mean([m['rho'] for m in per_layer.values()])),
        'admm_z_sparsity': sums[2] / sums[3],
    }
    for name, values in per_layer.items():
      logs.update({f'admm_{key}/{name}': float(value)
                   for key, value in values.items()})
    return {key: float(value) for key, value in logs.items()}

  def _implements_train_batch_hooks(self):
    # A per-batch Python call costs a host round trip every step; only
    # step-based updates, a ramp, or a model that `fit` has yet to build,
    # need it.
    return (bool(self.update_every_steps) or self.ramp is not None or
            not self.model.built)

  def on_train_batch_end(self, batch, logs=None):
    if not self._ready:  # `fit` built the model during the first step
      self._initialize()
    self._steps += 1
    if self.ramp is not None and self.ramp.prunes_at(self._step):
      for layer, regularizer in self._pairs:
        self._ramp_prune(layer, regularizer)
    if self.update_every_steps and self._steps % self.update_every_steps == 0:
      self.update()
      if logs is not None:
        logs.update(self._measure())

  def on_epoch_end(self, epoch, logs=None):
    if self.update_every_epochs and (epoch + 1) % self.update_every_epochs == 0:
      self.update()
    epoch_logs = {}
    if self.stage_rates:
      stage = int(self._pairs[0][1].stage)
      if ((epoch + 1) % self.epochs_per_stage == 0 and
          stage < len(self.stage_rates) - 1):
        self._advance_stage()
        if self.verbose:
          print(f'ADMM stage {stage + 2}/{len(self.stage_rates)}: '
                f'{self.stage_rates[stage + 1]:g}x')
      epoch_logs['admm_stage'] = float(self._pairs[0][1].stage)
    if logs is not None:
      logs.update(self._measure(), **epoch_logs)
