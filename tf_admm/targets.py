"""Pruning targets: how many weights each prunable weight tensor keeps.

A target is given as a `Sparsity`, a `KeepRatio` or a `CompressionRate`;
`keep_counts` turns per-layer targets (by layer name or layer class) or one
global target (allocated over weights by one threshold on a score) into the
number of entries each prunable weight keeps.

A global target's score is LAMP's by default (layer-adaptive magnitude
pruning, Lee et al., ICLR 2021): an entry's squared magnitude over the sum
of the squares of the entries of its tensor at least as large. It ranks
entries within a tensor as their magnitudes do, but compares tensors on one
scale, so a layer whose weights are small (an embedding, a depthwise
kernel) is not emptied by a threshold set by larger ones, which raw
magnitudes ('magnitude') do.
"""

import dataclasses
import math
from typing import Mapping, NamedTuple, Optional, Union
import warnings

import numpy as np

from tf_admm import arguments
from tf_admm import weights as weights_lib


@dataclasses.dataclass(frozen=True)
class KeepRatio:
  """Fraction of a layer's weights that stay nonzero, in (0, 1]."""
  value: float

  def __post_init__(self):
    arguments.finite_number('KeepRatio', self.value)
    if not 0.0 < self.value <= 1.0:
      raise ValueError(f'KeepRatio must be in (0, 1], got {self.value}.')

  @property
  def keep_ratio(self) -> float:
    return self.value


@dataclasses.dataclass(frozen=True)
class Sparsity:
  """Fraction of a layer's weights set to zero, in [0, 1)."""
  value: float

  def __post_init__(self):
    arguments.finite_number('Sparsity', self.value)
    if not 0.0 <= self.value < 1.0:
      raise ValueError(
          f'Sparsity must be in [0, 1), got {self.value}; a sparsity of 1 '
          'would remove every weight.')

  @property
  def keep_ratio(self) -> float:
    return 1.0 - self.value


@dataclasses.dataclass(frozen=True)
class CompressionRate:
  """Weights before pruning / weights left, >= 1 (10 means 10x)."""
  value: float

  def __post_init__(self):
    arguments.finite_number('CompressionRate', self.value)
    if not self.value >= 1.0:
      raise ValueError(
          f'CompressionRate must be >= 1 (10 means keep 1 weight in 10), got '
          f'{self.value}.')

  @property
  def keep_ratio(self) -> float:
    return 1.0 / self.value


Target = Union[KeepRatio, Sparsity, CompressionRate]
LayerKey = Union[str, type]
_TARGET_TYPES = {t.__name__: t for t in (KeepRatio, Sparsity, CompressionRate)}


def highest_rate(model, layer_names) -> float:
  """The highest compression rate over `model`'s prunable weights that
  pruning the layers `layer_names` can reach: each of their weights keeping
  one entry, every other weight whole."""
  prunable = weights_lib.prunable_weights(model)
  kept = sum(1 if w.layer.name in layer_names else w.size for w in prunable)
  return sum(w.size for w in prunable) / kept


def serialize(target: Optional[Target]) -> Optional[dict]:
  if target is None:
    return None
  return {'class_name': type(target).__name__, 'value': target.value}


def deserialize(config: Optional[dict]) -> Optional[Target]:
  if config is None:
    return None
  return _TARGET_TYPES[config['class_name']](config['value'])


def _check_target(target, where):
  if not isinstance(target, (KeepRatio, Sparsity, CompressionRate)):
    raise ValueError(
        f'{where}: expected tf_admm.Sparsity, KeepRatio or CompressionRate, '
        f'got {target!r}.')


class Resolved(NamedTuple):
  keep: int  # entries the weight keeps
  target: Target  # the target that count came from


def _per_layer_targets(weights, per_layer) -> dict:
  """{weight path: target} for the weights of layers named (or typed) in
  `per_layer`."""
  found = {}
  for key, target in per_layer.items():
    _check_target(target, f'per_layer[{key!r}]')
    if isinstance(key, str):
      matched = [w for w in weights if w.layer.name == key]
    elif isinstance(key, type):
      matched = [w for w in weights if isinstance(w.layer, key)]
    else:
      raise ValueError(f'per_layer keys are layer names or layer classes, got '
                       f'{key!r}.')
    if not matched:
      names = dict.fromkeys(f'{w.layer.name} ({type(w.layer).__name__})'
                            for w in weights)
      raise ValueError(f'per_layer[{key!r}] matches no prunable layer; '
                       f'prunable layers are: {", ".join(names)}.')
    for weight in matched:
      # A name is more specific than a class, so it wins.
      if weight.path not in found or isinstance(key, str):
        found[weight.path] = target
  return found


ALLOCATIONS = ('lamp', 'magnitude')
# attach_admm warns about a weight a global target leaves less than this
# share of its entries.
WARN_KEEP_RATIO = 0.01


def lamp_scores(values) -> np.ndarray:
  """LAMP scores of the entries of one tensor, in ascending order of
  magnitude: w_u^2 / sum of w_v^2 over the entries v at least as large."""
  squares = np.sort(np.square(np.asarray(values, np.float64)).ravel())
  tail = np.cumsum(squares[::-1])[::-1]
  return squares / np.maximum(tail, np.finfo(np.float64).tiny)


def _descending_scores(values, allocation) -> np.ndarray:
  if allocation == 'lamp':
    return lamp_scores(values)[::-1]
  return np.sort(np.abs(values).ravel())[::-1]


def _global_keep(weights, target, min_keep_ratio, allocation) -> dict:
  """One threshold over all weights' scores, each keeping a floor."""
  sizes = np.array([w.size for w in weights])
  budget = int(round(sizes.sum() * target.keep_ratio))
  floors = np.maximum(1, np.ceil(sizes * min_keep_ratio)).astype(int)
  if floors.sum() > budget:
    raise ValueError(
        f'The global target keeps {budget} weights, fewer than the per-weight '
        f'floor of min_keep_ratio={min_keep_ratio} needs ({floors.sum()}); '
        'lower min_keep_ratio or the compression rate.')
  # Each weight's highest-scoring `floor` entries are reserved; the rest of
  # the budget goes to the highest remaining scores, wherever they are.
  rest, owner = [], []
  for i, (weight, floor) in enumerate(zip(weights, floors)):
    ordered = _descending_scores(weight.variable.numpy(), allocation)
    rest.append(ordered[floor:])
    owner.append(np.full(ordered.size - floor, i))
  rest, owner = np.concatenate(rest), np.concatenate(owner)
  winners = owner[np.argsort(-rest, kind='stable')[:budget - floors.sum()]]
  counts = floors + np.bincount(winners, minlength=len(weights))
  return {w.path: int(c) for w, c in zip(weights, counts)}


def resolve(model,
            target: Optional[Target] = None,
            per_layer: Optional[Mapping[LayerKey, Target]] = None,
            min_keep_ratio: float = 0.001,
            allocation: str = 'lamp') -> dict:
  """{weight path: Resolved(keep, target)} for every weight a target covers.

  Args:
    model: a built model of either Keras.
    target: one target for all prunable weights of layers not named in
      `per_layer`, allocated by one threshold on the entries' scores (see
      `allocation`), every weight tensor keeping at least `min_keep_ratio`
      of its entries and at least one. None prunes only the layers in
      `per_layer`. A weight left under 1% of its entries is warned about.
    per_layer: targets by layer name or layer class (a name beats a class);
      a layer with two prunable weights (SeparableConv2D) applies its target
      to each.
    min_keep_ratio: floor of the global allocation, in [0, 1].
    allocation: the global target's score: 'lamp' (the default; see the
      module) or 'magnitude' (one threshold on raw magnitudes).
  """
  weights = weights_lib.prunable_weights(model)
  if target is None and not per_layer:
    raise ValueError('Give a global `target`, `per_layer` targets, or both.')
  if not 0.0 <= min_keep_ratio <= 1.0:
    raise ValueError(f'min_keep_ratio must be in [0, 1], got {min_keep_ratio}.')
  if allocation not in ALLOCATIONS:
    raise ValueError(f'allocation must be one of {", ".join(ALLOCATIONS)}, '
                     f'got {allocation!r}.')
  chosen = _per_layer_targets(weights, per_layer or {})
  # The epsilon keeps KeepRatio(k / n) at exactly k despite rounding.
  resolved = {w.path: Resolved(
      max(1, math.ceil(w.size * chosen[w.path].keep_ratio - 1e-9)),
      chosen[w.path]) for w in weights if w.path in chosen}
  rest = [w for w in weights if w.path not in chosen]
  if target is not None:
    _check_target(target, 'target')
    if not rest:
      raise ValueError('`target` has no layer left to apply to: per_layer '
                       'already names every prunable layer.')
    counts = _global_keep(rest, target, min_keep_ratio, allocation)
    _warn_if_nearly_empty(rest, counts)
    resolved.update({path: Resolved(count, target)
                     for path, count in counts.items()})
  return {w.path: resolved[w.path] for w in weights if w.path in resolved}


def _warn_if_nearly_empty(weights, counts) -> None:
  """Warns about weights a global target leaves almost nothing of."""
  few = [f'{w.path} ({counts[w.path]} of {w.size:,})' for w in weights
         if counts[w.path] < WARN_KEEP_RATIO * w.size]
  if few:
    warnings.warn(
        f'The global target keeps under {WARN_KEEP_RATIO:.0%} of '
        f'{", ".join(few)}. If that is more than wanted, raise '
        'min_keep_ratio or give those layers per_layer targets.',
        stacklevel=3)


def keep_counts(model,
                target: Optional[Target] = None,
                per_layer: Optional[Mapping[LayerKey, Target]] = None,
                min_keep_ratio: float = 0.001,
                allocation: str = 'lamp') -> dict:
  """{weight path: entries kept} for the targets (see `resolve`): the plan
  `attach_admm` carries out for the same arguments."""
  return {path: r.keep for path, r in resolve(
      model, target, per_layer, min_keep_ratio, allocation).items()}


def rescale(keep_ratios: Mapping[str, float], sizes: Mapping[str, int],
            rate: float, caps: Optional[Mapping[str, float]] = None) -> dict:
  """Per-layer keep ratios of the same shape that together reach `rate`.

  Multiplies every ratio by one factor c (capping each at its `caps` entry,
  default 1) so that the layers keep sum(sizes) / rate weights in total: how
  per-layer targets scale from one progressive stage to the next.
  """
  caps = {n: 1.0 if caps is None else caps[n] for n in sizes}
  total = sum(sizes.values())
  budget = total / CompressionRate(rate).value
  reachable = sum(caps[n] * sizes[n] for n in sizes)
  if budget > reachable + 1e-9:
    raise ValueError(f'rate {rate:g} keeps more weights than the constraints '
                     f'allow: they keep at most 1 in '
                     f'{total / reachable:.3g}.')

  def kept(c):
    return sum(min(caps[n], c * keep_ratios[n]) * sizes[n] for n in sizes)

  low, high = 0.0, 1.0 / min(keep_ratios[n] for n in sizes)
  for _ in range(100):  # kept(c) is monotonic: bisect
    mid = (low + high) / 2
    low, high = (mid, high) if kept(mid) < budget else (low, mid)
  return {n: min(caps[n], high * keep_ratios[n]) for n in sizes}
