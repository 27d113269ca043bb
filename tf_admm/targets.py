"""Pruning targets: how many weights each prunable layer keeps.

A target is given as a `Sparsity`, a `KeepRatio` or a `CompressionRate`;
`keep_counts` turns per-layer targets (by layer name or layer class) or one
global target (allocated over layers by a single magnitude threshold) into
the number of weights each layer keeps.
"""

import dataclasses
import math
from typing import Mapping, Optional, Union

import numpy as np
import tf_keras as keras

# Layers whose `kernel` ADMM prunes. Matched by exact class, as tfmot's
# registry does, so DepthwiseConv2D and SeparableConv* (subclasses of Conv,
# which tfmot never prunes through `kernel`) are left alone.
PRUNABLE_LAYER_TYPES = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


@dataclasses.dataclass(frozen=True)
class KeepRatio:
  """Fraction of a layer's weights that stay nonzero, in (0, 1]."""
  value: float

  def __post_init__(self):
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
    if not self.value >= 1.0:  # also rejects NaN
      raise ValueError(
          f'CompressionRate must be >= 1 (10 means keep 1 weight in 10), got '
          f'{self.value}.')

  @property
  def keep_ratio(self) -> float:
    return 1.0 / self.value


Target = Union[KeepRatio, Sparsity, CompressionRate]
LayerKey = Union[str, type]


def prunable_layers(model):
  """The model's layers whose kernel can be pruned, in model order."""
  if not isinstance(model, keras.Model):
    raise ValueError(f'Expected a tf_keras Model, got {type(model).__name__}. '
                     'Build models with `import tf_keras`, not Keras 3.')
  layers = [l for l in model.layers if type(l) in PRUNABLE_LAYER_TYPES]
  if not layers:
    raise ValueError(
        f'Model {model.name!r} has no prunable layer; tf_admm prunes the '
        'kernels of ' + ', '.join(t.__name__ for t in PRUNABLE_LAYER_TYPES) +
        '.')
  return layers


def kernel_size(layer) -> int:
  """Number of weights in a built layer's kernel."""
  if not layer.built:
    raise ValueError(
        f'Layer {layer.name!r} is not built, so its size is unknown; build the '
        'model first (give it an Input or call model.build(input_shape)).')
  return int(np.prod(layer.kernel.shape))


def _check_target(target, where):
  if not isinstance(target, (KeepRatio, Sparsity, CompressionRate)):
    raise ValueError(
        f'{where}: expected tf_admm.Sparsity, KeepRatio or CompressionRate, '
        f'got {target!r}.')


def _per_layer_keep(layers, per_layer) -> dict:
  """Keep ratios for layers named (or typed) in `per_layer`."""
  ratios = {}
  for key, target in per_layer.items():
    _check_target(target, f'per_layer[{key!r}]')
    if isinstance(key, str):
      matched = [l for l in layers if l.name == key]
    elif isinstance(key, type):
      matched = [l for l in layers if isinstance(l, key)]
    else:
      raise ValueError(f'per_layer keys are layer names or layer classes, got '
                       f'{key!r}.')
    if not matched:
      raise ValueError(
          f'per_layer[{key!r}] matches no prunable layer; prunable layers are: '
          + ', '.join(f'{l.name} ({type(l).__name__})' for l in layers) + '.')
    for layer in matched:
      # A name is more specific than a class, so it wins.
      if layer.name not in ratios or isinstance(key, str):
        ratios[layer.name] = target.keep_ratio
  return ratios


def _global_keep(layers, target, min_keep_ratio) -> dict:
  """One magnitude threshold over all layers, each keeping a floor."""
  sizes = np.array([kernel_size(l) for l in layers])
  kernels = [np.abs(l.kernel.numpy()).ravel() for l in layers]
  budget = int(round(sizes.sum() * target.keep_ratio))
  floors = np.maximum(1, np.ceil(sizes * min_keep_ratio)).astype(int)
  if floors.sum() > budget:
    raise ValueError(
        f'The global target keeps {budget} weights, fewer than the per-layer '
        f'floor of min_keep_ratio={min_keep_ratio} needs ({floors.sum()}); '
        'lower min_keep_ratio or the compression rate.')
  # Each layer's largest `floor` weights are reserved; the rest of the budget
  # goes to the largest remaining magnitudes, whatever their layer.
  rest, owner = [], []
  for i, (kernel, floor) in enumerate(zip(kernels, floors)):
    ordered = np.sort(kernel)[::-1]
    rest.append(ordered[floor:])
    owner.append(np.full(ordered.size - floor, i))
  rest, owner = np.concatenate(rest), np.concatenate(owner)
  winners = owner[np.argsort(-rest, kind='stable')[:budget - floors.sum()]]
  counts = floors + np.bincount(winners, minlength=len(layers))
  return {l.name: int(c) for l, c in zip(layers, counts)}


def keep_counts(model,
                target: Optional[Target] = None,
                per_layer: Optional[Mapping[LayerKey, Target]] = None,
                min_keep_ratio: float = 0.001,
                layers=None) -> dict:
  """How many kernel weights each prunable layer keeps.

  Args:
    model: a built tf_keras model.
    target: one target for all prunable layers not named in `per_layer`,
      allocated by a global magnitude threshold (so layers with larger weights
      keep more), every layer keeping at least `min_keep_ratio` of its weights
      and at least one. None prunes only the layers in `per_layer`.
    per_layer: targets by layer name or layer class; a name beats a class.
    min_keep_ratio: floor of the global allocation, in [0, 1].
    layers: the layers to prune (default: all of `prunable_layers(model)`).

  Returns:
    {layer name: number of weights kept}, in model order, for each pruned
    layer.
  """
  layers = prunable_layers(model) if layers is None else list(layers)
  if target is None and not per_layer:
    raise ValueError('Give a global `target`, `per_layer` targets, or both.')
  if not 0.0 <= min_keep_ratio <= 1.0:
    raise ValueError(f'min_keep_ratio must be in [0, 1], got {min_keep_ratio}.')
  ratios = _per_layer_keep(layers, per_layer or {})
  # The epsilon keeps KeepRatio(k / n) at exactly k despite rounding.
  counts = {
      l.name: max(1, math.ceil(kernel_size(l) * ratios[l.name] - 1e-9))
      for l in layers if l.name in ratios}
  rest = [l for l in layers if l.name not in ratios]
  if target is not None:
    _check_target(target, 'target')
    if not rest:
      raise ValueError('`target` has no layer left to apply to: per_layer '
                       'already names every prunable layer.')
    counts.update(_global_keep(rest, target, min_keep_ratio))
  return {l.name: counts[l.name] for l in layers if l.name in counts}


def rescale(keep_ratios: Mapping[str, float], sizes: Mapping[str, int],
            rate: float) -> dict:
  """Per-layer keep ratios of the same shape that together reach `rate`.

  Multiplies every ratio by one factor c (capping each at 1) so that the
  layers keep sum(sizes) / rate weights in total: how per-layer targets scale
  from one progressive stage to the next.
  """
  total = sum(sizes.values())
  budget = total / CompressionRate(rate).value
  if budget > total:
    raise ValueError(f'rate {rate} keeps more weights than there are.')

  def kept(c):
    return sum(min(1.0, c * keep_ratios[n]) * sizes[n] for n in sizes)

  low, high = 0.0, 1.0 / min(keep_ratios[n] for n in sizes)
  for _ in range(100):  # kept(c) is monotonic: bisect
    mid = (low + high) / 2
    low, high = (mid, high) if kept(mid) < budget else (low, mid)
  return {n: min(1.0, high * keep_ratios[n]) for n in sizes}
