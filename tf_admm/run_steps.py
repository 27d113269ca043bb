"""The steps of a progressive run, one protocol for all: a step makes one
unit (a model, its metrics, its masks) from a parent unit, and
`run_step` saves it, or finds it saved by an earlier, interrupted run.

  Pretrain   the dense model
  Prune      a stage's child: masked ADMM along a gradual ramp to a rate,
             then masked retraining
  Quantize   the final model's kept weights on their levels, zeros fixed
  Shrink     the final model's pruned channels cut out, then fine-tuned
"""

import abc
import dataclasses
import math
import time
from typing import Callable, Mapping, Optional

import numpy as np

from tf_admm import attach
from tf_admm import callback as callback_lib
from tf_admm import constraints as constraints_lib
from tf_admm import macs
from tf_admm import masked_retraining
from tf_admm import run_store
from tf_admm import schedules
from tf_admm import surgery
from tf_admm import targets
from tf_admm import trainer as trainer_lib
from tf_admm import weights as weights_lib


def nonzero_counts(model) -> dict:
  """{prunable weight path: (size, nonzero entries)}."""
  return {w.path: (w.size, int(np.count_nonzero(w.variable.numpy())))
          for w in weights_lib.prunable_weights(model)}


def compression_rate(model) -> float:
  counts = nonzero_counts(model).values()
  return sum(t for t, _ in counts) / max(1, sum(n for _, n in counts))


def quantization_rounds(settings) -> schedules.Rounds:
  """The schedule of the quantization step."""
  return schedules.Rounds(
      settings.hold_fraction, settings.quantize_epochs_per_round,
      update_every_epochs=1 / settings.quantize_updates_per_epoch,
      rho_growth=settings.quantize_rho_growth)


@dataclasses.dataclass
class Context:
  """What every step works with."""
  store: run_store.RunStore
  trainer: trainer_lib.Trainer
  settings: object  # a tf_admm.progressive.Settings
  log: Callable[[str], None]


class Step(abc.ABC):
  """Makes the unit `name` from its parent unit."""

  name: str

  @abc.abstractmethod
  def make(self, context: Context, parent: Optional[str]) -> tuple:
    """(model, metrics, masks or None) of the unit."""

  def describe(self, metrics: dict) -> Optional[str]:
    """The line logged once the unit is made (None: none)."""
    del metrics
    return None


def run_step(context: Context, step: Step,
             parent: Optional[str] = None) -> str:
  """Makes and saves `step`'s unit unless it is saved; returns its name."""
  if not context.store.finished(step.name):
    start = time.time()
    model, metrics, masks = step.make(context, parent)
    metrics['seconds'] = time.time() - start
    context.store.save_unit(step.name, model, metrics, masks)
    line = step.describe(metrics)
    if line:
      context.log(line)
  return step.name


class Pretrain(Step):
  """The dense model, from the run's seed (which fixes its initial weights
  too, so that a seed reproduces its run)."""

  name = 'dense'

  def make(self, context, parent):
    settings, trainer = context.settings, context.trainer
    trainer.keras.utils.set_random_seed(settings.seed)
    model = trainer.compile(context.store.build_model(),
                            decay_epochs=settings.pretrain_epochs)
    trainer.fit(model, self.name, settings.pretrain_epochs)
    return model, {'epochs': settings.pretrain_epochs,
                   'val_accuracy': trainer.val_accuracy(model),
                   'test_accuracy': trainer.test_accuracy(model)}, None

  def describe(self, metrics):
    return (f'pretrained: test accuracy {metrics["test_accuracy"]:.4f}, '
            f'{metrics["seconds"]:.0f} s')


@dataclasses.dataclass
class Prune(Step):
  """Pushes the parent to a stage's per-layer keep ratios by masked ADMM
  toward `constraint`, then retrains with the masks held."""
  stage: int
  index: int
  rate: float
  keep_ratios: Mapping[str, float]
  constraint: constraints_lib.Constraint

  @property
  def name(self):
    return f's{self.stage:02d}_c{self.index}'

  def make(self, context, parent):
    settings, trainer = context.settings, context.trainer
    model, masks = context.store.load_unit(parent)
    admm = trainer.compile(attach.attach_admm(
        model, per_layer={n: targets.KeepRatio(r)
                          for n, r in self.keep_ratios.items()},
        constraint=self.constraint, rho=settings.rho, masks=masks))
    ramp = schedules.PolynomialRamp(
        epochs=settings.admm_epochs,
        prune_every_steps=settings.prune_every_steps,
        lookahead_steps=settings.lookahead_steps)
    trainer.fit(admm, f'{self.name}_admm', settings.admm_epochs,
                [callback_lib.AdmmCallback(ramp)])
    constraints = {w.path: constraints_lib.serialize(r.constraint)
                   for w, r in attach.admm_weights(admm)}
    wrapped = trainer.compile(masked_retraining.to_pruning_wrappers(admm),
                              decay_epochs=settings.retrain_epochs)
    if self.constraint.removes_channels:
      surgery.silence_pruned_channels(wrapped)
    if settings.retrain_epochs:
      trainer.fit(wrapped, f'{self.name}_retrain', settings.retrain_epochs)
    pruned = masked_retraining.strip_pruning(wrapped)
    metrics = {
        'stage': self.stage, 'target_rate': self.rate, 'parent': parent,
        'rate': compression_rate(pruned),
        'val_accuracy': trainer.val_accuracy(pruned),
        'test_accuracy': trainer.test_accuracy(pruned),
        'epochs': settings.admm_epochs + settings.retrain_epochs,
        'constraints': constraints,
    }
    return pruned, metrics, masked_retraining.masks_of(wrapped)


@dataclasses.dataclass
class Quantize(Step):
  """Quantizes the parent with its zeros fixed: rounds of ADMM toward the
  levels of `quantization` ({layer name: Quantize}), holding a share more
  of the weights on them each round, then as long again all held."""
  quantization: Mapping[str, constraints_lib.Constraint]
  stage: int
  name = 'quantized'

  def make(self, context, parent):
    settings, trainer = context.settings, context.trainer
    model, masks = context.store.load_unit(parent)
    rounds = quantization_rounds(settings)
    epochs = math.ceil((rounds.rounds + 1) *
                       settings.quantize_epochs_per_round)
    admm = trainer.compile(attach.attach_admm(
        model, constraint=dict(self.quantization), rho=settings.rho,
        masks=masks), decay_epochs=epochs)
    trainer.fit(admm, self.name, epochs, [callback_lib.AdmmCallback(rounds)])
    pairs = attach.admm_weights(admm)
    held = all(r.all_held for _, r in pairs)
    quantized = attach.remove_admm(admm)
    metrics = {
        'stage': self.stage, 'parent': parent,
        'rate': compression_rate(quantized),
        'val_accuracy': trainer.val_accuracy(quantized),
        'test_accuracy': trainer.test_accuracy(quantized),
        'epochs': epochs,
        'constraints': {w.path: constraints_lib.serialize(r.constraint)
                        for w, r in pairs},
        'all_held': held,
    }
    return quantized, metrics, {w.path: r.mask.numpy() > 0 for w, r in pairs}

  def describe(self, metrics):
    return (f'quantized: {metrics["rate"]:.1f}x, val accuracy '
            f'{metrics["val_accuracy"]:.4f}, test accuracy '
            f'{metrics["test_accuracy"]:.4f}, every kept weight held on its '
            f'level: {"yes" if metrics["all_held"] else "NO"} '
            f'({metrics["seconds"]:.0f} s)')


@dataclasses.dataclass
class Shrink(Step):
  """Cuts the parent's pruned channels out (`tf_admm.surgery`) and
  fine-tunes the smaller model."""
  stage: int
  name = 'shrunk'

  def make(self, context, parent):
    settings, trainer = context.settings, context.trainer
    masked, _ = context.store.load_unit(parent)
    small, widths = surgery.remove_channels(masked)
    difference = surgery.checked_difference(masked, small,
                                            trainer.data.x_val[:500])
    cut_accuracy = trainer.val_accuracy(small)
    epochs = settings.finetune_epochs
    if epochs:
      trainer.fit(trainer.compile(small, decay_epochs=epochs), self.name,
                  epochs)
    dense = context.store.load_model('dense')
    metrics = {
        'stage': self.stage, 'parent': parent,
        'channels': {layer: list(w) for layer, w in widths.items()},
        'macs': {'dense': macs.model_macs(dense)['total'],
                 'final': macs.model_macs(small)['total']},
        'params': {'dense': dense.count_params(),
                   'final': small.count_params()},
        'surgery_max_difference': difference,
        'cut_val_accuracy': cut_accuracy,
        'rate': compression_rate(small),
        'val_accuracy': trainer.val_accuracy(small),
        'test_accuracy': trainer.test_accuracy(small),
        'epochs': epochs,
    }
    masks = {w.path: w.variable.numpy() != 0
             for w in weights_lib.prunable_weights(small)}
    return small, metrics, masks

  def describe(self, metrics):
    cut = ', '.join(f'{layer} {before}->{after}'
                    for layer, (before, after) in metrics['channels'].items())
    factor = metrics['macs']['dense'] / metrics['macs']['final']
    return (f'cut to {factor:.1f}x fewer MACs ({cut}), val accuracy '
            f'{metrics["cut_val_accuracy"]:.4f} after the cut, '
            f'{metrics["val_accuracy"]:.4f} after {metrics["epochs"]} '
            f'fine-tuning epochs, test accuracy '
            f'{metrics["test_accuracy"]:.4f} ({metrics["seconds"]:.0f} s)')
