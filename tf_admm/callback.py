"""The ADMM Z- and U-steps and hard prunes inside `model.fit`."""

import warnings

import numpy as np

from tf_admm import attach
from tf_admm import channel_coupling
from tf_admm import channel_graph
from tf_admm import finite
from tf_admm import keras_compat
from tf_admm import schedules


class AdmmCallback(keras_compat.BatchHookCallback):
  """Runs ADMM between the W-steps of `model.fit`, as `schedule` says.

  The model comes from `tf_admm.attach_admm`, which gave each weight its
  constraint. When training starts, each weight whose ADMM state was not
  restored from a checkpoint begins: Z = Proj(W), U = 0. After each step the
  schedule (`tf_admm.PolynomialRamp`, `tf_admm.Stages`) decides whether to
  hard-prune (W = Proj(W), the zeros held from then on, then Z, U and rho
  restart) or to take a Z/U step:

    Z <- Proj(W + U),  U <- U + W - Z,  rho <- rho * rho_growth
  (rho only while the projection still moves something).

  At each epoch end it writes to `logs` (so History, the progress bar and a
  CSVLogger or TensorBoard listed after it see them):
    admm_primal_residual   ||W - Z|| / ||W||, all ADMM weights together
    admm_z_change          ||Z_new - Z_old|| at the last Z/U step
    admm_rho               rho at the last Z/U step (the mean over weights)
    admm_z_sparsity        fraction of zeros in Z
    admm_progress          how far the Z-step's target is along the schedule
  and with `per_weight_metrics` the first four per weight as
  `<key>/<weight path>`.

  A fit that ends before the schedule does warns, saying how far it got. A
  NaN or Inf in the loss or in a weight under ADMM stops the fit at once
  with a `tf_admm.finite.NonFiniteError` naming the layer (or the loss).
  """

  def __init__(self, schedule: schedules.Schedule,
               per_weight_metrics: bool = False):
    super().__init__()
    if not isinstance(schedule, schedules.Schedule):
      raise ValueError(f'AdmmCallback needs a tf_admm schedule '
                       f'(PolynomialRamp or Stages), got {schedule!r}.')
    self.schedule = schedule
    self.per_weight_metrics = per_weight_metrics
    self._bound = None  # the schedule in steps of the current fit
    self._pairs = []
    self._coupled = []  # groups of tied channels, projected together
    self._start_step = None  # the optimizer step at which ADMM began
    self._step = None  # optimizer steps since ADMM began, once started

  def needs_batch_hooks(self):
    return True  # prunes and updates fall between steps

  def on_train_begin(self, logs=None):
    self._pairs = attach.admm_weights(self.model)
    if not self._pairs:
      raise ValueError(
          f'Model {self.model.name!r} has no ADMM regularizer: create it with '
          'tf_admm.attach_admm(model, target) before fitting with '
          'AdmmCallback.')
    if not self.params.get('steps'):
      raise ValueError('AdmmCallback counts its schedule in steps: give fit '
                       'data of known length, or steps_per_epoch.')
    if keras_compat.steps_per_execution(self.model) > 1:
      raise ValueError('AdmmCallback acts between training steps: compile the '
                       'model with steps_per_execution=1.')
    if keras_compat.gradient_accumulation_steps(self.model) > 1:
      raise ValueError('AdmmCallback counts its schedule in optimizer steps, '
                       'one per batch: give the optimizer no '
                       'gradient_accumulation_steps.')
    if any(r.constraint.removes_channels for _, r in self._pairs):
      self._coupled = channel_coupling.coupled_channels(
          channel_graph.ChannelGraph(self.model), self._pairs)
    self._step = None

  def on_train_batch_begin(self, batch, logs=None):
    if self._step is None:  # after every callback's on_train_begin, so
      self._start()  # after BackupAndRestore's, wherever it is listed

  def _start(self):
    """Binds the schedule; begins ADMM on weights not restored mid-ADMM."""
    iterations = keras_compat.optimizer_steps(self.model)
    for weight, regularizer in self._pairs:
      regularizer.prepare(weight.variable)
    fresh = [(w, r) for w, r in self._pairs if not r.started]
    for _, regularizer in fresh:
      regularizer.begin(iterations)
    sizes = sum(w.size for w, _ in self._pairs)
    start = sum(int(r.start_nonzeros.numpy()) for _, r in self._pairs)
    final = sum(int(np.count_nonzero(r.project(w.variable.numpy()).mask))
                for w, r in self._pairs)
    self._bound = self.schedule.bind(schedules.FitInfo(
        steps_per_epoch=self.params['steps'], epochs=self.params['epochs'],
        start_rate=sizes / max(start, 1), final_rate=sizes / max(final, 1)))
    last_step = max(int(r.last_step.numpy()) for _, r in self._pairs)
    if iterations < last_step:
      raise ValueError(
          f'ADMM ran to optimizer step {last_step}, but the optimizer has '
          f'taken {iterations}: the model was compiled anew, and the '
          'schedule, counted in optimizer steps, cannot continue. Fit without '
          'recompiling, or start over from tf_admm.attach_admm.')
    self._start_step = int(self._pairs[0][1].start_step.numpy())
    self._step = iterations - self._start_step
    progress = self._bound.z_progress(self._step)
    chosen = self._channels(lambda w, r: w.variable.numpy(), progress)
    for weight, regularizer in fresh:
      regularizer.restart(weight.variable, progress, chosen.get(weight.path))

  def _channels(self, values_of, progress) -> dict:
    """{weight path: output channels kept} of the tied groups."""
    return channel_coupling.choose_channels(self._coupled, values_of,
                                            progress)

  def on_train_batch_end(self, batch, logs=None):
    schedule = self._bound
    step = keras_compat.optimizer_steps(self.model) - self._start_step
    when = f'{step} steps into ADMM'
    if logs and 'loss' in logs:
      finite.check_loss(logs['loss'],
                        lambda: finite.model_variables(self.model), when)
    if step == self._step:  # a step Keras 3's loss scaling skipped
      return
    self._step = step
    prunes, updates = schedule.prunes_at(step), schedule.updates_at(step)
    if prunes or updates:  # a NaN or Inf weight would project to nonsense
      finite.check_weights(
          {f'Layer {w.layer.name!r} ({w.path})': w.variable
           for w, _ in self._pairs}, when)
    current = lambda w, r: w.variable.numpy()
    if prunes:
      pruned = self._channels(current, schedule.prune_progress(step))
      for weight, regularizer in self._pairs:
        regularizer.hard_project(weight.variable,
                                 schedule.prune_progress(step),
                                 pruned.get(weight.path))
      restarted = self._channels(current, schedule.z_progress(step))
      for weight, regularizer in self._pairs:
        regularizer.restart(weight.variable, schedule.z_progress(step),
                            restarted.get(weight.path))
    elif updates:
      chosen = self._channels(
          lambda w, r: w.variable.numpy() + r.u.numpy(),
          schedule.z_progress(step))
      for weight, regularizer in self._pairs:
        regularizer.update(weight.variable, schedule.z_progress(step),
                           schedule.rho_growth, chosen.get(weight.path))

  def on_epoch_end(self, epoch, logs=None):
    step = keras_compat.optimizer_steps(self.model)
    for _, regularizer in self._pairs:
      regularizer.last_step.assign(step)
    if logs is not None:
      logs.update(measure(self._pairs, self.per_weight_metrics),
                  admm_progress=self._bound.z_progress(self._step))

  def on_train_end(self, logs=None):
    if self._step is not None and self._step < self._bound.end_step:
      sizes = sum(w.size for w, _ in self._pairs)
      kept = sum(int(np.count_nonzero(r.mask.numpy())) for _, r in self._pairs)
      warnings.warn(
          f'ADMM stopped {self._step} steps into a schedule of '
          f'{self._bound.end_step}: the hard prunes reached '
          f'{sizes / max(kept, 1):.2f}x, short of the targets. Fit longer, or '
          'fit again to finish the schedule.', schedules.ScheduleNotFinished)


def measure(pairs, per_weight: bool = False) -> dict:
  """The admm_* metrics of [(PrunableWeight, its ADMM regularizer)], measured
  from the state as it is now."""
  sums = {p.path: r.measure(p.variable) for p, r in pairs}
  total = {key: sum(s[key] for s in sums.values())
           for key in ('gap', 'norm', 'z_zeros', 'size')}

  def metrics(s):
    return {
        'admm_primal_residual': (np.sqrt(s['gap'] / s['norm'])
                                 if s['norm'] else 0.0),
        'admm_z_sparsity': s['z_zeros'] / s['size'],
    }

  logs = dict(
      metrics(total),
      admm_z_change=np.sqrt(sum(s['z_change']**2 for s in sums.values())),
      admm_rho=np.mean([s['rho'] for s in sums.values()]))
  if per_weight:
    for path, s in sums.items():
      logs.update({f'{key}/{path}': value for key, value in
                   dict(metrics(s), admm_z_change=s['z_change'],
                        admm_rho=s['rho']).items()})
  return {key: float(value) for key, value in logs.items()}
