"""ADMM constraint sets as small, serializable objects.

A constraint says which weight tensors are feasible for one weight: its
`project` is the Euclidean projection onto that set (a pure function of the
weights and of the entries still allowed), and it records the target it was
made from. Every constraint has a `keep` count (at most that many nonzeros;
None for no count), which a gradual ramp lowers step by step with
`with_keep`.

A new constraint is one projection function in `tf_admm.projections` and one
class here; the regularizer, callback, wrappers and export take any.

A level constraint (`Quantize`) also has levels: the values each output
channel's weights may take, from a `LevelFamily` (uniform k-bit, ternary,
binary, k-means; a new family is one class in `levels_lib.LEVEL_FAMILIES`). `fit_levels` chooses them and
`project(..., levels=...)` rounds to given ones, so the regularizer can hold
them fixed once weights sit on them (`levels_shape` says it has some).
"""

import abc
import dataclasses
from typing import Optional

import numpy as np

from tf_admm import levels as levels_lib
from tf_admm import projections
from tf_admm import registration
from tf_admm import targets


# Every constraint class by name: what `deserialize` accepts.
_CLASSES = {}


class Constraint(abc.ABC):
  """Base of the constraint dataclasses; subclasses define `keep`, `target`
  and `project`."""

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    _CLASSES[cls.__name__] = cls

  keep: Optional[int]
  target: Optional[targets.Target]
  # Whether the zeros it leaves are whole output channels, which surgery
  # can remove.
  removes_channels = False
  # Whether it puts the kept entries on levels (see `levels_shape`).
  has_levels = False

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

  def levels_shape(self, shape):
    """The shape of this constraint's levels for a weight of `shape`; None
    for a constraint without levels."""
    del shape
    return None

  def max_keep_ratio(self, weight) -> float:
    """The largest share of `weight` this constraint lets it keep: a target
    above it cannot be reached."""
    del weight  # a count alone can keep everything
    return 1.0

  def held_scale_axes(self, rank: int) -> Optional[tuple]:
    """The axes over which weights held on their levels share one scale
    that keeps training (`tf_admm.masks.MaskConstraint`); None: held
    weights stay fixed."""
    del rank
    return None

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


@registration.register
@dataclasses.dataclass(frozen=True)
class KeepChannels(Constraint):
  """Whole output channels (a convolution's filters, a Dense layer's units):
  at most `keep` nonzeros, as the `keep // entries per channel` channels of
  largest L2 norm.

  Zero channels can be cut out of the model (`tf_admm.surgery`), so the
  pruned network is a smaller dense one that runs faster anywhere.
  `attach_admm` sets `axis`, the weight's output-channel axis; weights
  without one that mixes inputs (depthwise kernels, embeddings) are left
  out: their channels follow their inputs'.
  """
  axis: Optional[int] = None
  keep: Optional[int] = None
  target: Optional[targets.Target] = None

  removes_channels = True

  def for_weight(self, weight, keep, target=None):
    if keep is None or weight.kind.input_axis is None:
      return None
    return dataclasses.replace(self, axis=weight.kind.output_axis, keep=keep,
                               target=target)

  def channels(self, shape) -> int:
    """How many channels a weight of `shape` keeps."""
    channel_size = int(np.prod(shape)) // shape[self.axis]
    return self.keep // channel_size

  def project(self, weights, allowed=None):
    if self.keep is None or self.axis is None:
      raise ValueError('KeepChannels needs `keep` and `axis`; attach_admm sets '
                       'them for each weight.')
    return projections.keep_top_channels(weights, self.channels(np.shape(
        weights)), self.axis, allowed)


@registration.register
@dataclasses.dataclass(frozen=True)
class Quantize(Constraint):
  """Every kept entry on one of a few levels; the others 0.

  levels:
    'uniform': {±1, ..., ±L} * q with L = 2**(bits - 1) (0 is kept for
      pruned weights: `bits` bits index the 2L levels);
    'ternary': {-q, 0, +q};
    'binary': {-q, +q} (uniform at 1 bit);
    'kmeans': 2**bits levels placed by 1-D k-means over the kept entries.
  q (or the k-means levels) is chosen per output channel (`per_channel`,
  what TFLite stores) or per tensor, to minimize the squared error of the
  projection (`tf_admm.projections.uniform_levels`, `kmeans_levels`).
  With `keep`, only the `keep` largest entries are kept (pruning and
  quantization at once); without it, every entry the mask allows.
  `attach_admm` sets `keep` from its target (none: no pruning) and `axis`,
  the weight's output-channel axis.
  With `train_scale`, once every kept entry of a channel (of the tensor,
  without `per_channel`) is held on its level, the channel's codes stay
  fixed and its held entries keep training together, as one multiple of
  their held values: the channel's scale. (A channel held whole while others
  of its weight are not is still pulled toward its old levels by the Z-step
  until the whole weight is held.)
  """
  levels: str = 'uniform'
  bits: Optional[int] = None
  per_channel: bool = True
  axis: Optional[int] = None
  keep: Optional[int] = None
  target: Optional[targets.Target] = None
  train_scale: bool = False

  has_levels = True

  def __post_init__(self):
    if self.levels not in levels_lib.LEVEL_FAMILIES:
      raise ValueError(f'Quantize: levels must be one of '
                       f'{", ".join(levels_lib.LEVEL_FAMILIES)}; got {self.levels!r}.')
    self.family.check_bits(self.levels, self.bits)

  @property
  def family(self) -> levels_lib.LevelFamily:
    return levels_lib.LEVEL_FAMILIES[self.levels]

  @property
  def codes(self) -> Optional[tuple]:
    """The non-negative level multiples of q (grid families)."""
    return self.family.codes(self.bits)

  @property
  def level_count(self) -> int:
    return self.family.level_count(self.bits)

  @property
  def storage_bits(self) -> int:
    """Bits that name a nonzero entry's level, in the papers' terms (where
    the zeros are is the sparse index's job)."""
    return self.family.storage_bits(self.bits)

  def for_weight(self, weight, keep, target=None):
    axis = weight.kind.output_axis if self.per_channel else None
    return dataclasses.replace(self, axis=axis, keep=keep, target=target)

  def levels_shape(self, shape):
    return (1 if self.axis is None else shape[self.axis], self.level_count)

  def held_scale_axes(self, rank: int) -> Optional[tuple]:
    if not self.train_scale:
      return None
    channel = None if self.axis is None else self.axis % rank
    return tuple(a for a in range(rank) if a != channel)

  def _kept(self, weights, allowed):
    if self.keep is None:
      return allowed
    return projections.keep_top_k(weights, self.keep, allowed).mask

  def fit_levels(self, weights, allowed=None):
    """The best levels for the kept entries of `weights`."""
    return self.family.fit(weights, self.bits, self.axis,
                           self._kept(weights, allowed))

  def project(self, weights, allowed=None, levels=None):
    """Rounds the kept entries to `levels` (fitted to them when None)."""
    allowed = self._kept(weights, allowed)
    if levels is None:
      levels = self.fit_levels(weights, allowed)
    return projections.round_to_levels(weights, levels, self.axis, allowed)


def serialize(constraint: Constraint) -> dict:
  """A constraint as JSON-ready data, in the form Keras serializes
  registered objects (so files written through Keras read back alike)."""
  name = type(constraint).__name__
  return {'module': __name__, 'class_name': name,
          'config': constraint.get_config(),
          'registered_name': f'{registration.PACKAGE}>{name}'}


def deserialize(config) -> Constraint:
  """The constraint `serialize` wrote. Only tf_admm's constraint classes
  are made: whatever module a file names, none is imported."""
  name = config.get('class_name') if isinstance(config, dict) else None
  if name not in _CLASSES or not isinstance(config.get('config'), dict):
    raise ValueError(
        f'Not a tf_admm constraint: {config!r}. Constraints are one of '
        f'{", ".join(sorted(_CLASSES))}, as tf_admm writes them.')
  try:
    return _CLASSES[name].from_config(config['config'])
  except (TypeError, KeyError, ValueError) as error:
    raise ValueError(f'The {name} constraint {config["config"]!r} cannot be '
                     f'made: {error}') from error
