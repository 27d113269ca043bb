"""The settings of a progressive run (`tf_admm.progressive`), checked when
made, its data, and how run.json's record of them is read back."""

import dataclasses
import json
from typing import Sequence

import numpy as np

from tf_admm import arguments
from tf_admm import constraints as constraints_lib


RATE_UNITS = ('weights', 'macs')


@dataclasses.dataclass(frozen=True)
class Settings:
  """Training settings of a progressive run (all epochs are per stage)."""
  stage_rates: Sequence[float]
  candidates: int = 1
  pretrain_epochs: int = 10
  admm_epochs: int = 4
  retrain_epochs: int = 4
  prune_every_steps: int = 50
  lookahead_steps: int = 200
  rho: float = 1e-2
  learning_rate: float = 1e-3
  batch_size: int = 128
  shift_pixels: int = 0  # > 0: train on randomly shifted images
  # Quantization (when the run has levels to train toward): the share of
  # the weights held on their levels after each round, and its length.
  hold_fraction: float = 0.3
  quantize_epochs_per_round: float = 1.0
  quantize_rho_growth: float = 1.0  # rho's factor at each Z/U update
  # Z/U updates per epoch, one every steps-per-epoch / N steps, rounded
  # (one falling on a round's end gives way to its hard projection): with
  # 1-epoch rounds, 1 leaves each round a fixed pull toward the levels;
  # more, with rho growing, bring the free weights close to them before
  # they are held.
  quantize_updates_per_epoch: int = 1
  # What a stage rate counts: 'weights' (prunable weights / nonzero ones)
  # or 'macs' (dense MACs / MACs of the model with pruned channels cut).
  rate_unit: str = 'weights'
  finetune_epochs: int = 0  # of the model cut down to its kept channels
  seed: int = 0

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if field.type is float:
        arguments.finite_number(field.name, getattr(self, field.name))
      elif field.type is int:
        arguments.whole_number(field.name, getattr(self, field.name))
    for rate in self.stage_rates:
      arguments.finite_number('each of stage_rates', rate)
    rates = list(self.stage_rates)
    if not all(1 < a < b for a, b in zip(rates, rates[1:] + [float('inf')])):
      raise ValueError(f'stage_rates must be increasing rates > 1, got '
                       f'{rates}.')
    for name, valid, rule in (
        ('hold_fraction', 0 < self.hold_fraction <= 1, 'in (0, 1]'),
        ('quantize_epochs_per_round', self.quantize_epochs_per_round > 0,
         '> 0'),
        ('quantize_rho_growth', self.quantize_rho_growth >= 1, '>= 1')):
      if not valid:
        raise ValueError(f'{name} must be {rule}, got {getattr(self, name)}.')
    for name in ('candidates', 'pretrain_epochs', 'admm_epochs',
                 'prune_every_steps', 'batch_size',
                 'quantize_updates_per_epoch'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}.')
    if self.rate_unit not in RATE_UNITS:
      raise ValueError(f'rate_unit must be one of {", ".join(RATE_UNITS)}, '
                       f'got {self.rate_unit!r}.')
    for name in ('retrain_epochs', 'lookahead_steps', 'shift_pixels',
                 'finetune_epochs'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}.')
    for name in ('rho', 'learning_rate'):
      if not getattr(self, name) > 0:
        raise ValueError(f'{name} must be > 0, got {getattr(self, name)}.')
    if not 0 <= self.seed < 2**32:  # what the random generators take
      raise ValueError(f'seed must be in [0, 2**32), got {self.seed}.')


@dataclasses.dataclass
class Data:
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def geometric_rates(first: float, last: float, factor: float) -> list:
  """Rates from `first` to `last`, evenly spaced in log, steps near `factor`."""
  if not (1 < first <= last and factor > 1):
    raise ValueError(f'Need 1 < first <= last and factor > 1; got first='
                     f'{first}, last={last}, factor={factor}.')
  steps = max(0, round(np.log(last / first) / np.log(factor)))
  if steps == 0:
    return [float(last)]
  return [float(first * (last / first)**(i / steps)) for i in range(steps + 1)]


def _as_written_now(serialized):
  """A constraint's config from run.json as this version writes it: fields
  added since then take their defaults (unreadable ones stay as found)."""
  try:
    constraint = constraints_lib.deserialize(serialized)
  except ValueError:
    return serialized
  return json.loads(json.dumps(constraints_lib.serialize(constraint)))


def run_json_as_written_now(found):
  """run.json as this version writes it: settings added since a run began
  take the defaults it ran with."""
  defaults = {f.name: f.default for f in dataclasses.fields(Settings)
              if f.default is not dataclasses.MISSING}
  if isinstance(found.get('settings'), dict):
    found['settings'] = dict(defaults, **found['settings'])
  if isinstance(found.get('quantization'), dict):
    found['quantization'] = {name: _as_written_now(config)
                             for name, config in found['quantization'].items()}
  if 'constraint' in found:
    found['constraint'] = _as_written_now(found['constraint'])
  return found
