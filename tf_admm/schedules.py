"""When ADMM prunes and updates during a fit: gradual ramps and stages.

A schedule is the policy `tf_admm.AdmmCallback(schedule)` follows, as
`LearningRateScheduler(schedule)` follows its function. It counts in
optimizer steps since ADMM began (so a fit resumed by BackupAndRestore
continues where it stopped) and answers, after each step:
  prunes_at(step)        hard-project W and restart Z, U and rho now?
  updates_at(step)       a Z/U step now (when not pruning)?
  prune_progress(step)   how far toward the final target the prune goes;
  z_progress(step)       how far the Z-step aims, from then on.
A schedule may span several fits (each resumes the count); a fit that ends
before the schedule does gets a `ScheduleNotFinished` warning.
Progress runs from 0 (the weights the masks allow when ADMM began) to 1
(each weight's constraint); `AdmmRegularizer.constraint_at` turns it into a
constraint. Lengths are given in epochs (or fractions of the fit); `bind`,
when the fit begins, returns a copy with them in steps, and leaves the
schedule as given. `get_config`/`from_config` save and make one.

A hard prune that removes many weights at once costs accuracy that
retraining must win back. A ramp instead moves each weight from where it
starts to its target along tfmot's polynomial curve (fast while there is much
to prune, slowly near the end), with a small hard prune every few steps;
the Z-step looks ahead along the ramp, so the weights due to go next are
already being pulled toward zero when they are cut. Stages are the paper's
few large steps: ADMM at each stage's rate for some epochs, a hard prune at
each boundary.
"""

import abc
import copy
import dataclasses
import math
from typing import Optional, Sequence


class ScheduleNotFinished(UserWarning):
  """A fit ended before its ADMM schedule reached the final targets."""


@dataclasses.dataclass(frozen=True)
class FitInfo:
  """What a schedule needs to know of the fit and the model."""
  steps_per_epoch: int
  epochs: int
  start_rate: float  # compression of the ADMM weights when ADMM began
  final_rate: float  # ... at their constraints' counts (inf: no counts)


def _positive_int(owner, name, value, minimum=1):
  if not (isinstance(value, int) and value >= minimum):
    raise ValueError(f'{owner}: {name} must be an integer >= {minimum}, got '
                     f'{value!r}.')


class Schedule(abc.ABC):
  """Base of ADMM schedules. Z/U updates between prunes are optional:
  every `update_every_epochs` epochs or `update_every_steps` steps, each one
  multiplying rho by `rho_growth` while the constraint still binds."""

  def __init__(self, update_every_epochs: Optional[float] = None,
               update_every_steps: Optional[int] = None,
               rho_growth: float = 1.0):
    if update_every_epochs is not None and update_every_steps is not None:
      raise ValueError('Give update_every_epochs or update_every_steps, not '
                       'both.')
    if update_every_steps is not None:
      _positive_int(type(self).__name__, 'update_every_steps',
                    update_every_steps)
    if update_every_epochs is not None and not update_every_epochs > 0:
      raise ValueError(f'update_every_epochs must be > 0, got '
                       f'{update_every_epochs}.')
    if not rho_growth >= 1.0:
      raise ValueError(f'rho_growth must be >= 1, got {rho_growth}.')
    self.update_every_epochs = update_every_epochs
    self.update_every_steps = update_every_steps
    self.rho_growth = rho_growth
    self._update_interval = update_every_steps

  def bind(self, fit: FitInfo) -> 'Schedule':
    """A copy of this schedule with its lengths in steps of `fit`; raises
    if it cannot work there."""
    bound = copy.copy(self)
    bound._bind(fit)  # pylint: disable=protected-access
    return bound

  def get_config(self) -> dict:
    return {'update_every_epochs': self.update_every_epochs,
            'update_every_steps': self.update_every_steps,
            'rho_growth': self.rho_growth}

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  def _bind(self, fit: FitInfo) -> None:
    if self.update_every_epochs is not None:
      self._update_interval = max(
          1, round(self.update_every_epochs * fit.steps_per_epoch))

  def updates_at(self, step: int) -> bool:
    return bool(self._update_interval) and step % self._update_interval == 0

  @property
  @abc.abstractmethod
  def end_step(self) -> int:
    """The step after which the final target is reached."""

  @abc.abstractmethod
  def prunes_at(self, step: int) -> bool:
    pass

  @abc.abstractmethod
  def prune_progress(self, step: int) -> float:
    pass

  @abc.abstractmethod
  def z_progress(self, step: int) -> float:
    pass


class PolynomialRamp(Schedule):
  """Progress 1 - (1 - t / T) ** power after t of the ramp's T steps.

  Args:
    epochs: the ramp's length in epochs (may be fractional), or
    fraction: its length as a fraction of the fit (exactly one of the two).
    prune_every_steps: steps between hard prunes (the last one falls on the
      ramp's end).
    lookahead_steps: how far ahead along the ramp the Z-step aims.
    power: 3 as in tfmot's PolynomialDecay and Zhu & Gupta (2017).
  Z/U updates between prunes are optional (see `Schedule`).
  """

  def __init__(self, epochs: Optional[float] = None,
               fraction: Optional[float] = None,
               prune_every_steps: int = 50, lookahead_steps: int = 200,
               power: float = 3.0, **updates):
    super().__init__(**updates)
    if (epochs is None) == (fraction is None):
      raise ValueError('PolynomialRamp: give its length as `epochs` or as a '
                       '`fraction` of the fit, one of the two.')
    if epochs is not None and not epochs > 0:
      raise ValueError(f'PolynomialRamp: epochs must be > 0, got {epochs}.')
    if fraction is not None and not 0 < fraction <= 1:
      raise ValueError(f'PolynomialRamp: fraction must be in (0, 1], got '
                       f'{fraction}.')
    _positive_int('PolynomialRamp', 'prune_every_steps', prune_every_steps)
    _positive_int('PolynomialRamp', 'lookahead_steps', lookahead_steps, 0)
    if not power > 0:
      raise ValueError(f'PolynomialRamp: power must be > 0, got {power}.')
    self.epochs, self.fraction = epochs, fraction
    self.prune_every_steps = prune_every_steps
    self.lookahead_steps = lookahead_steps
    self.power = power
    self.ramp_steps = None  # known once bound to a fit

  def get_config(self):
    return dict(super().get_config(), epochs=self.epochs,
                fraction=self.fraction,
                prune_every_steps=self.prune_every_steps,
                lookahead_steps=self.lookahead_steps, power=self.power)

  def _bind(self, fit):
    super()._bind(fit)
    epochs = self.epochs if self.epochs is not None else (
        self.fraction * fit.epochs)
    self.ramp_steps = max(1, round(epochs * fit.steps_per_epoch))

  @property
  def end_step(self):
    return self.ramp_steps

  def progress(self, step: int) -> float:
    done = min(max(step, 0), self.ramp_steps) / self.ramp_steps
    return 1.0 - (1.0 - done)**self.power

  def prunes_at(self, step):
    return 0 < step <= self.ramp_steps and (
        step % self.prune_every_steps == 0 or step == self.ramp_steps)

  def prune_progress(self, step):
    return self.progress(step)

  def z_progress(self, step):
    return self.progress(step + self.lookahead_steps)


class Stages(Schedule):
  """ADMM at a few increasing compression rates, `epochs_per_stage` each.

  Args:
    rates: the intermediate stages' overall compression rates (of the
      weights under ADMM), increasing and below the targets' rate; the final
      stage, at the targets, follows them and lasts to the end of the fit.
      Empty: one-shot ADMM at the targets from the start.
    epochs_per_stage: length of each intermediate stage.
    **updates: Z/U updates (see `Schedule`); default every epoch.
  At each stage boundary the weights are hard-pruned to the stage's target
  (those zeros held from then on) and Z, U and rho restart.
  """

  def __init__(self, rates: Sequence[float] = (),
               epochs_per_stage: Optional[float] = None, **updates):
    if not {'update_every_epochs', 'update_every_steps'} & set(updates):
      updates['update_every_epochs'] = 1
    super().__init__(**updates)
    self.rates = [float(r) for r in rates]
    if self.rates and not (epochs_per_stage and epochs_per_stage > 0):
      raise ValueError(f'Stages: intermediate rates need epochs_per_stage > '
                       f'0, got {epochs_per_stage!r}.')
    if not all(1 < a < b for a, b in zip(self.rates, self.rates[1:] +
                                          [math.inf])):
      raise ValueError(f'Stages: rates must increase, each > 1; got '
                       f'{self.rates}.')
    self.epochs_per_stage = epochs_per_stage
    self._stage_steps = None
    self._progress = [1.0]

  def get_config(self):
    return dict(super().get_config(), rates=list(self.rates),
                epochs_per_stage=self.epochs_per_stage)

  def _bind(self, fit):
    super()._bind(fit)
    if not self.rates:
      self._stage_steps = 1
      return
    if not fit.start_rate < self.rates[0] or not self.rates[-1] < (
        fit.final_rate):
      raise ValueError(
          f'Stages: rates {self.rates} must lie between the rate ADMM starts '
          f'from ({fit.start_rate:.2f}x) and the targets\' '
          f'({fit.final_rate:.2f}x).')
    self._stage_steps = max(1, round(self.epochs_per_stage *
                                     fit.steps_per_epoch))
    # Each weight's count moves linearly with progress, so the overall kept
    # fraction does too: solve it for each stage's rate.
    start, final = 1 / fit.start_rate, 1 / fit.final_rate
    self._progress = [(start - 1 / r) / (start - final)
                      for r in self.rates] + [1.0]

  def _stage(self, step):
    return min(max(step, 0) // self._stage_steps, len(self.rates))

  @property
  def end_step(self):
    return len(self.rates) * self._stage_steps

  def prunes_at(self, step):
    return 0 < step <= self.end_step and step % self._stage_steps == 0

  def prune_progress(self, step):
    return self._progress[self._stage(step - 1)]

  def z_progress(self, step):
    return self._progress[self._stage(step)]


class Rounds(Schedule):
  """Iterative quantization: rounds of ADMM, each ending in a hard
  projection that holds `fraction_per_round` more of the kept weights on
  their levels (those nearest them first), until all are held.

  Args:
    fraction_per_round: the share of the kept weights held at each round's
      end (0.3 as in the papers: 30%, 60%, 90%, 100%).
    epochs_per_round: length of each round.
    **updates: Z/U updates (see `Schedule`); default every epoch. An
      update falling on a round's end gives way to its hard projection, so
      rounds need several updates each to run ADMM at all.
  The Z-step always rounds every kept weight; with a `keep` count as well,
  the count moves in the same steps. After the last round every quantized
  weight is held, and the rest of the fit trains the other parameters.
  """

  def __init__(self, fraction_per_round: float = 0.3,
               epochs_per_round: float = 1.0, **updates):
    if not {'update_every_epochs', 'update_every_steps'} & set(updates):
      updates['update_every_epochs'] = 1
    super().__init__(**updates)
    if not 0 < fraction_per_round <= 1:
      raise ValueError(f'Rounds: fraction_per_round must be in (0, 1], got '
                       f'{fraction_per_round}.')
    if not epochs_per_round > 0:
      raise ValueError(f'Rounds: epochs_per_round must be > 0, got '
                       f'{epochs_per_round}.')
    self.fraction_per_round = fraction_per_round
    self.epochs_per_round = epochs_per_round
    self.rounds = math.ceil(1 / fraction_per_round - 1e-9)
    self._round_steps = None

  def get_config(self):
    return dict(super().get_config(),
                fraction_per_round=self.fraction_per_round,
                epochs_per_round=self.epochs_per_round)

  def _bind(self, fit):
    super()._bind(fit)
    self._round_steps = max(1, round(self.epochs_per_round *
                                     fit.steps_per_epoch))

  def _progress(self, rounds_done):
    return min(1.0, rounds_done * self.fraction_per_round)

  @property
  def end_step(self):
    return self.rounds * self._round_steps

  def prunes_at(self, step):
    return 0 < step <= self.end_step and step % self._round_steps == 0

  def prune_progress(self, step):
    return self._progress(step // self._round_steps)

  def z_progress(self, step):
    return self._progress(max(step, 0) // self._round_steps + 1)
