"""How a pruning target moves during training: a gradual ramp.

A hard prune that removes many weights at once costs accuracy that
retraining must win back. Like tfmot's `PolynomialDecay`, a ramp instead
moves each layer from the weights it starts with to its final count along a
polynomial curve, fast while there is much to prune and slowly near the end,
with small hard prunes at regular steps. Under ADMM the weights due to go next
are already being pulled toward zero (the Z-step looks ahead along the ramp),
so each small prune removes weights that hardly matter any more.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class PolynomialRamp:
  """Fraction of the way to the final target after `step` training steps.

    progress(step) = 1 - (1 - min(step, ramp_steps) / ramp_steps) ** power

  Attributes:
    ramp_steps: steps until the final target is reached.
    prune_every_steps: steps between hard prunes (the last one falls on
      `ramp_steps`).
    lookahead_steps: how far ahead along the ramp the ADMM Z-step aims.
    power: 3 as in tfmot's PolynomialDecay and Zhu & Gupta (2017).
  """
  ramp_steps: int
  prune_every_steps: int = 50
  lookahead_steps: int = 200
  power: float = 3.0

  def __post_init__(self):
    for name in ('ramp_steps', 'prune_every_steps'):
      value = getattr(self, name)
      if not (isinstance(value, int) and value >= 1):
        raise ValueError(f'PolynomialRamp: {name} must be an integer >= 1, '
                         f'got {value!r}.')
    if not (isinstance(self.lookahead_steps, int) and
            self.lookahead_steps >= 0):
      raise ValueError(f'PolynomialRamp: lookahead_steps must be an integer '
                       f'>= 0, got {self.lookahead_steps!r}.')
    if not self.power > 0:
      raise ValueError(f'PolynomialRamp: power must be > 0, got {self.power}.')

  def progress(self, step: int) -> float:
    done = min(max(step, 0), self.ramp_steps) / self.ramp_steps
    return 1.0 - (1.0 - done)**self.power

  def prunes_at(self, step: int) -> bool:
    """Whether a hard prune falls right after training step `step`."""
    return 0 < step <= self.ramp_steps and (
        step % self.prune_every_steps == 0 or step == self.ramp_steps)

  def keep(self, start: int, final: int, step: int) -> int:
    """Weights a layer keeps after `step` steps, moving from start to final."""
    return int(round(start + (final - start) * self.progress(step)))
