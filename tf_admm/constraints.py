"""ADMM constraint sets as small, serializable objects.

A constraint says which weight tensors are feasible for one weight: its
`project` is the Euclidean projection onto that set (a pure function of the
weights and of the entries still allowed), and it records the target it was
made from. Every constraint has a `keep` count (at most that many nonzeros;
None for no count), which a gradual ramp lowers step by step with
`with_keep`.

A new constraint is one projection function in `tf_admm.projections` and one
class here; the regularizer, callback, wrappers and export take any.
"""

import abc
import dataclasses
from typing import Optional

from tf_admm import projections
from tf_admm import registration
from tf_admm import targets


class Constraint(abc.ABC):
  """Base of the constraint dataclasses; subclasses define `keep`, `target`
  and `project`."""

  keep: Optional[int]
  target: Optional[targets.Target]

  @abc.abstractmethod
  def project(self, weights, allowed=None) -> projections.Projection:
    """The nearest feasible point to `weights` that keeps only allowed
    entries."""

  def for_weight(self, weight, keep: Optional[int],
                 target: Optional[targets.Target] = None):
    """This constraint fitted to one prunable weight (a
    `tf_admm.weights.PrunableWeight`) that keeps `keep` entries; None where
    it would not constrain the weight at all."""
    del weight  # this constraint fits any weight
    if keep is None:
      return None
    return dataclasses.replace(self, keep=keep, target=target)

  def with_keep(self, keep: int):
    """The same constraint keeping at most `keep` entries."""
    return dataclasses.replace(self, keep=keep)

  def max_keep_ratio(self, weight) -> float:
    """The largest share of `weight` this constraint lets it keep: a target
    above it cannot be reached."""
    del weight  # a count alone can keep everything
    return 1.0

  def get_config(self) -> dict:
    config = {f.name: getattr(self, f.name)
              for f in dataclasses.fields(self)}
    config['target'] = targets.serialize(self.target)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['target'] = targets.deserialize(config['target'])
    return cls(**config)


@registration.register
@dataclasses.dataclass(frozen=True)
class KeepLargest(Constraint):
  """At most `keep` nonzeros: the `keep` entries of largest magnitude."""
  keep: Optional[int] = None
  target: Optional[targets.Target] = None

  def project(self, weights, allowed=None):
    if self.keep is None:
      raise ValueError('KeepLargest needs a `keep` count; attach_admm sets it '
                       'from the targets.')
    return projections.keep_top_k(weights, self.keep, allowed)


@registration.register
@dataclasses.dataclass(frozen=True)
class NOutOfM(Constraint):
  """At most `n` nonzeros in every `m` consecutive entries along `axis` (the
  weight's input dimension), and at most `keep` in all when set.

  2:4 is the pattern NVIDIA's sparse tensor cores run. `attach_admm` sets
  `axis` for each weight; a weight the pattern does not fit (no input
  dimension, as in a depthwise kernel or an embedding, or one whose length is
  not a multiple of `m`, as in a convolution over one input channel) falls
  back to `KeepLargest` at its target, or stays unpruned without one.
  A schedule's progress moves only the `keep` count: the pattern itself
  applies in full from the first Z-step and hard prune.
  """
  n: int
  m: int
  axis: Optional[int] = None
  keep: Optional[int] = None
  target: Optional[targets.Target] = None

  def __post_init__(self):
    if not (isinstance(self.n, int) and isinstance(self.m, int) and
            0 < self.n < self.m):
      raise ValueError(f'NOutOfM: need integers 0 < n < m, got '
                       f'{self.n}:{self.m}.')

  @classmethod
  def parse(cls, text: str) -> 'NOutOfM':
    """'2:4' -> NOutOfM(2, 4)."""
    try:
      n, m = (int(part) for part in text.split(':'))
    except ValueError:
      raise ValueError(f'A pattern is N:M with integers N < M, such as 2:4; '
                       f'got {text!r}.') from None
    return cls(n, m)

  def fits(self, weight) -> bool:
    """Whether `weight` has an input dimension of a multiple of m entries."""
    axis = weight.kind.input_axis
    return axis is not None and weight.shape[axis] % self.m == 0

  def for_weight(self, weight, keep, target=None):
    if not self.fits(weight):
      return KeepLargest().for_weight(weight, keep, target)
    return dataclasses.replace(self, axis=weight.kind.input_axis, keep=keep,
                               target=target)

  def max_keep_ratio(self, weight):
    return self.n / self.m if self.fits(weight) else 1.0

  def project(self, weights, allowed=None):
    if self.axis is None:
      raise ValueError('NOutOfM needs an `axis`; attach_admm sets it for each '
                       'weight.')
    return projections.n_of_m(weights, self.n, self.m, self.axis, self.keep,
                              allowed)
