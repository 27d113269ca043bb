"""Progressive ADMM pruning with a pool of candidate models, resumable.

Each stage pushes every pool member to the stage's compression rate by
masked ADMM along a gradual ramp (many small hard prunes, each aimed at by
the Z-step in advance; `tf_admm.schedules.PolynomialRamp`), then retrains it
with the mask fixed. Candidates are ranked on a validation split.
While the pool holds fewer than `candidates` models the best child joins it;
after that the best child replaces the parent it came from. With one
candidate this is plain progressive pruning.
With a constraint that prunes whole channels (`tf_admm.KeepChannels`), the
best final model is then cut down to a smaller dense model
(`tf_admm.surgery`) and fine-tuned; stage rates may then count MACs
(`Settings.rate_unit`).
With `quantization` (per-layer `tf_admm.constraints.Quantize`), the best
final model (the cut one, or the dense one without stages) is then
quantized with its zeros fixed: rounds of ADMM toward the levels, each
holding a share more of the weights on them (`tf_admm.Rounds`), until all
are held.

The steps are `tf_admm.run_steps`'; their files live in a
`tf_admm.run_store.RunStore` (every piece written whole or not at all, so a
killed run loses at most the unit in progress, and BackupAndRestore covers
its epochs), which under a `tf.distribute` strategy with several workers
only the chief writes:
  run.json                       the settings, checked on resume
  dense/                         the pretrained model
  allocation.json                the final per-layer keep ratios
  candidates/<name>/             one per stage child: weights, masks and
                                 metrics
  pool.json                      the pool after the last finished stage
  candidates/quantized/          the quantized model, when quantizing
  candidates/shrunk/             the model without its pruned channels
                                 (model.keras), when pruning channels
"""

import dataclasses
import os
from typing import Callable, Mapping, Optional

import tensorflow as tf

from tf_admm import allocations
from tf_admm import attach
from tf_admm import constraints as constraints_lib
from tf_admm import datasets
from tf_admm import keras_compat
from tf_admm import macs
from tf_admm import run_checks
from tf_admm import run_settings
from tf_admm import run_steps
from tf_admm import run_store
from tf_admm.run_settings import Data
from tf_admm.run_settings import Settings
from tf_admm import surgery
from tf_admm import targets
from tf_admm import trainer as trainer_lib
from tf_admm import weights as weights_lib


class ProgressiveRun:
  """One progressive pruning run in `output_dir`, resumed if already begun.

  Args:
    build_model: returns a fresh, built, uncompiled model, of either Keras.
    data: train/validation/test arrays.
    allocate: given the pretrained dense model, {layer name: keep ratio} at
      the final rate: the shape of the per-layer targets, rescaled for each
      stage. Computed once and kept in allocation.json.
    settings: `Settings`.
    output_dir: where the run lives.
    description: extra facts stored in run.json and checked on resume.
    log: where per-stage lines go.
    pretrained_dir: the dense/ folder of another run of the same model to
      start from instead of pretraining (so several runs share one start).
    constraint: the kind of constraint every stage trains toward
      (`tf_admm.attach_admm`'s `constraint`), fitted to each stage's
      per-layer targets.
    quantization: {layer name: `tf_admm.constraints.Quantize`} for every
      layer with prunable weights, to quantize the final model; None: no
      quantization. Without stage rates, the dense model is quantized.
    strategy: the `tf.distribute.Strategy` to train under (default: the
      current one).
    overwrite: write into `output_dir` even if it holds files that are not
      a run's (by default such a folder is refused, naming them).
  """

  def __init__(self, build_model: Callable[[], object], data: Data,
               allocate: Callable[[object], Mapping[str, float]],
               settings: Settings,
               output_dir: str, description: Optional[dict] = None,
               log: Callable[[str], None] = print,
               pretrained_dir: Optional[str] = None,
               constraint: constraints_lib.Constraint = (
                   constraints_lib.KeepLargest()),
               quantization: Optional[Mapping[
                   str, constraints_lib.Constraint]] = None,
               strategy: Optional[tf.distribute.Strategy] = None,
               overwrite: bool = False):
    if not settings.stage_rates and not quantization:
      raise ValueError('A run needs stage rates, quantization, or both.')
    if constraint.has_levels:
      raise ValueError(f'{constraint!r} has levels: the stages prune, and '
                       'their masked retraining holds zeros only. Give '
                       'levels as quantization= ({layer: Quantize}).')
    if settings.rate_unit == 'macs' and not constraint.removes_channels:
      raise ValueError('Stage rates count MACs only where whole channels '
                       'are pruned (rate_unit="macs" needs KeepChannels).')
    datasets.check_shift(settings.shift_pixels, data.x_train.shape[1:3])
    model = build_model()
    keras = keras_compat.keras_of(model)
    if keras is keras_compat.keras3 and isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy):
      raise ValueError(
          'Keras 3 models do not train under MultiWorkerMirroredStrategy '
          'here: Keras 3.15\'s fit fails on the first distributed batch '
          'before any step. Train them under MirroredStrategy (one '
          'machine), or train Keras 2 models on several machines.')
    self.allocate = allocate
    self.settings = settings
    self.pretrained_dir = pretrained_dir
    self.constraint = constraint
    self.quantization = dict(quantization or {})
    self.strategy = strategy or tf.distribute.get_strategy()
    self.store = run_store.RunStore(output_dir, build_model, keras,
                                    self.strategy, overwrite)
    self.store.check_folder()
    self._check_reachable(model)
    if pretrained_dir:
      run_store.check_copy_source(pretrained_dir, 'pretraining',
                                  pruned=False)
    self.context = run_steps.Context(
        self.store, trainer_lib.Trainer(
            data, settings, keras,
            lambda unit: self.store.path('backup', unit),
            records_backups=self.store.is_chief),
        settings, log)
    self.description = dict(description or {},
                            settings=dataclasses.asdict(settings),
                            pretrained_dir=pretrained_dir,
                            constraint=constraints_lib.serialize(
                                constraint),
                            quantization={
                                name: constraints_lib.serialize(q)
                                for name, q in self.quantization.items()})
    self.description['settings']['stage_rates'] = list(settings.stage_rates)
    if keras is keras_compat.keras3:  # Keras 2 runs predate the key
      self.description['keras'] = 3

  def _check_reachable(self, model) -> None:
    """Refuses, before any training, stage rates the model and the
    constraint cannot reach, and channel targets surgery could not cut."""
    settings, constraint = self.settings, self.constraint
    if not settings.stage_rates:
      return
    layers = self.allocate(model)  # which layers; untrained ratios are moot
    if settings.rate_unit == 'weights':
      ceiling = targets.highest_rate(model, layers)
      if settings.stage_rates[-1] > ceiling:
        raise ValueError(
            f'A compression rate of {settings.stage_rates[-1]:g}x is out of '
            f'reach: with every pruned layer ({", ".join(layers)}) down to '
            f'one weight per tensor, the model is {ceiling:,.1f}x smaller; '
            'choose a lower final rate (--target_rate).')
    for rate in settings.stage_rates:  # raises naming what is in reach
      self._stage_keep_ratios(layers, rate)
    if constraint.removes_channels:
      surgery.check_supported(model)
      attach.attach_admm(model, per_layer={
          name: targets.KeepRatio(1.0) for name in layers},
                         constraint=constraint)

  def claim(self) -> None:
    """Creates the run folder, or checks that it holds this run."""
    self.store.claim(self.description, run_settings.run_json_as_written_now)

  def pretrain(self) -> dict:
    """Trains (or finds, or copies from `pretrained_dir`) the dense model;
    returns its metrics."""
    if self.pretrained_dir and not self.store.finished('dense'):
      self.store.copy_unit('dense', self.pretrained_dir, 'pretraining')
    return self.store.metrics(run_steps.run_step(self.context,
                                                 run_steps.Pretrain()))

  def _stage_keep_ratios(self, final_keep_ratios, rate):
    """The final per-layer ratios rescaled to `rate`, none above what the
    constraint lets its layer keep (half, for 2:4)."""
    model = self.store.build_model()
    if self.settings.rate_unit == 'macs':
      return macs.keep_ratios_for_macs(model, final_keep_ratios, rate)
    sizes = {name: size for name, size in allocations.layer_sizes(model).items()
             if name in final_keep_ratios}
    caps = dict.fromkeys(sizes, 1.0)
    for weight in weights_lib.prunable_weights(model):
      if weight.layer.name in caps:
        caps[weight.layer.name] = min(caps[weight.layer.name],
                                      self.constraint.max_keep_ratio(weight))
    return targets.rescale(final_keep_ratios, sizes, rate, caps)

  def run(self) -> dict:
    """Runs (or resumes) every step; returns the run's summary.

    Its models are made outside the strategy's scope: what the caller does
    with them on one worker must not wait for the others.
    """
    with self.store.locked(), self.strategy.scope():
      state, dense_metrics, after = self._run()
    return self._summary(state, dense_metrics, after)

  def _allocation(self):
    """The final per-layer keep ratios, allocated once from the dense
    model."""
    if self.store.read_json('allocation.json') is None:
      ratios = self.allocate(self.store.load_model('dense'))
      self.store.write_json('allocation.json',
                            {n: float(r) for n, r in ratios.items()})
    return self.store.read_json('allocation.json')

  def _run(self):
    """(pool state, dense metrics, the unit made after the stages or None)."""
    self.claim()
    self._check_files()
    dense_metrics = self.pretrain()
    rates = list(self.settings.stage_rates)
    final_keep_ratios = self._allocation() if rates else None
    state = self.store.read_json(
        'pool.json', {'stages_done': 0, 'pool': [], 'best': []})
    for stage in range(state['stages_done'], len(rates)):
      keep_ratios = self._stage_keep_ratios(final_keep_ratios, rates[stage])
      children = [run_steps.run_step(self.context, run_steps.Prune(
          stage, index, rates[stage], keep_ratios, self.constraint), parent)
                  for index, parent in enumerate(state['pool'] or ['dense'])]
      self._choose(state, stage, rates, children)
    after = None  # the last unit made from the best final model, if any
    best = state['best'][-1] if state['best'] else 'dense'
    if self.constraint.removes_channels:
      best = after = run_steps.run_step(
          self.context, run_steps.Shrink(len(rates)), best)
    if self.quantization:
      after = run_steps.run_step(
          self.context, run_steps.Quantize(self.quantization, len(rates)),
          best)
    return state, dense_metrics, after

  def _check_files(self) -> None:
    """Checks every file a resumed run will read, before any training
    (`tf_admm.run_checks`); a damaged BackupAndRestore checkpoint only
    restarts its fit."""
    store = self.store
    store.check_finished_units()
    pool = store.read_json('pool.json')
    if pool is not None:
      run_checks.check_pool(store.path('pool.json'), pool,
                            len(self.settings.stage_rates),
                            self.settings.candidates, store.finished)
    allocation = store.read_json('allocation.json')
    if allocation is not None:
      run_checks.check_allocation(
          store.path('allocation.json'), allocation,
          {w.layer.name for w in weights_lib.prunable_weights(
              store.build_model())})
    if store.is_chief and os.path.isdir(store.path('backup')):
      for name in os.listdir(store.path('backup')):
        if not name.endswith(run_checks.BACKUP_CHECKSUMS):
          run_checks.drop_damaged_backup(store.path('backup', name))

  def _choose(self, state, stage, rates, children) -> None:
    """The candidate pool after `stage`: its best child joins the pool, or
    replaces its parent once the pool is full."""
    metrics = [self.store.metrics(c) for c in children]
    best = max(range(len(children)),
               key=lambda i: (metrics[i]['val_accuracy'], -i))
    if len(state['pool']) < self.settings.candidates:
      state['pool'].append(children[best])
    else:
      state['pool'][best] = children[best]  # the child replaces its parent
    state['stages_done'] = stage + 1
    state['best'].append(children[best])
    self.store.write_json('pool.json', state)
    seconds = sum(m['seconds'] for m in metrics)
    self.context.log(
        f'stage {stage + 1}/{len(rates)}: target {rates[stage]:.1f}x, '
        f'reached {metrics[best]["rate"]:.1f}x, val accuracy '
        f'{metrics[best]["val_accuracy"]:.4f}, test accuracy '
        f'{metrics[best]["test_accuracy"]:.4f} ({len(children)} '
        f'candidate(s), {seconds:.0f} s)')

  def _summary(self, state, dense_metrics, after=None):
    store = self.store
    quantized = after if self.quantization else None
    shrunk = (run_steps.Shrink.name if self.constraint.removes_channels
              else None)
    made = [unit for unit in (shrunk, quantized) if unit]
    candidates = [dict(store.metrics(n), name=n) for n in store.units()
                  if n not in made]
    final = after or state['best'][-1]
    trained = candidates + [store.metrics(unit) for unit in made]
    return {
        'final_model': store.load_model(final),
        'final_masks': store.load_masks(final),
        'dense_model': store.load_model('dense'),
        'dense_metrics': dense_metrics,
        'stages': [dict(store.metrics(n), name=n) for n in state['best']],
        'candidates': candidates,
        'quantized': (dict(store.metrics(quantized), name=quantized)
                      if quantized else None),
        'shrunk': (dict(store.metrics(shrunk), name=shrunk)
                   if shrunk else None),
        'epochs': dense_metrics['epochs'] + sum(c['epochs'] for c in trained),
        'train_seconds': dense_metrics['seconds'] + sum(
            c['seconds'] for c in trained),
    }
