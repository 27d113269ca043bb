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
