"""Which weights of a model ADMM can prune, nested models included.

A prunable weight is one weight tensor of a layer (a Dense kernel, the
depthwise and the pointwise kernel of a SeparableConv2D, an Embedding
matrix). Each is named by its path: the names of the nested models that hold
its layer, the layer's name and the weight's attribute, joined by '/'
('conv1/kernel', 'block/conv/kernel'). Masks, keep counts and reports are
keyed by that path; targets are given per layer.
"""

import dataclasses
from typing import Optional

import numpy as np

from tf_admm import keras_compat
from tf_admm.keras_compat import check_backend
from tf_admm.keras_compat import is_cloneable
from tf_admm.keras_compat import is_model
from tf_admm.keras_compat import keras
from tf_admm.keras_compat import keras3


@dataclasses.dataclass(frozen=True)
class WeightKind:
  attribute: str  # the layer attribute holding the variable
  regularizer: str  # the layer's constructor argument for its regularizer
  # The axis summed over when the weight is applied (the input dimension of
  # a matrix product), along which N:M groups run; None where there is none
  # (a depthwise kernel mixes no channels, an embedding is a lookup).
  input_axis: Optional[int]
  # The output-channel axis, along which per-channel quantization scales
  # run (TFLite's quantized dimension); None where the tensor has one scale.
  output_axis: Optional[int] = -1


_KERNEL = WeightKind('kernel', 'kernel_regularizer', -2)
_DEPTHWISE = WeightKind('depthwise_kernel', 'depthwise_regularizer', None,
                        None)
_POINTWISE = WeightKind('pointwise_kernel', 'pointwise_regularizer', -2)


def _prunable(layers) -> dict:
  """{layer class: its prunable weights} for one Keras's `layers` module."""
  return {
      layers.Dense: (WeightKind('kernel', 'kernel_regularizer', 0),),
      layers.Conv1D: (_KERNEL,),
      layers.Conv2D: (_KERNEL,),
      layers.Conv3D: (_KERNEL,),
      # A transposed convolution's kernel is (..., filters, input channels).
      layers.Conv2DTranspose: (
          WeightKind('kernel', 'kernel_regularizer', -1, -2),),
      layers.Conv3DTranspose: (
          WeightKind('kernel', 'kernel_regularizer', -1, -2),),
      layers.DepthwiseConv1D: (_DEPTHWISE,),
      layers.DepthwiseConv2D: (_DEPTHWISE,),
      layers.SeparableConv1D: (_DEPTHWISE, _POINTWISE),
      layers.SeparableConv2D: (_DEPTHWISE, _POINTWISE),
      layers.Embedding: (
          WeightKind('embeddings', 'embeddings_regularizer', None, 0),),
  }


# Matched by exact class, as tfmot's registry matches them: a subclass may
# compute something else with the same variables. Both Kerases' classes.
PRUNABLE = {**_prunable(keras.layers), **_prunable(keras3.layers)}


@dataclasses.dataclass(frozen=True)
class PrunableWeight:
  path: str  # 'block/conv/kernel'
  layer: object  # a layer of either Keras
  kind: WeightKind

  @property
  def variable(self):
    return getattr(self.layer, self.kind.attribute)

  @property
  def regularizer(self):
    return getattr(self.layer, self.kind.regularizer)

  @property
  def shape(self) -> tuple:
    return tuple(self.variable.shape)

  @property
  def size(self) -> int:
    return int(np.prod(self.shape))


def check_cloneable(model) -> None:
  """Raises unless `model` and every model nested in it can be cloned."""
  if not is_model(model):
    raise TypeError(
        f'Expected a Keras model (Keras 3, or tf_keras for Keras 2), got '
        f'{type(model).__name__}.')
  check_backend(model)
  if not is_cloneable(model):
    raise ValueError(
        f'Model {model.name!r} is a subclassed model; tf_admm (like tfmot) '
        'needs Sequential or functional models, whose layers it can clone. '
        'Rebuild it with the functional API.')
  for layer in model.layers:
    if is_model(layer):
      check_cloneable(layer)


def layers_with_paths(model, prefix=''):
  """[(path, layer)] of every layer, nested models' layers included."""
  found = []
  for layer in model.layers:
    path = prefix + layer.name
    if is_model(layer):
      found += layers_with_paths(layer, path + '/')
    else:
      found.append((path, layer))
  return found


def prunable_weights(model, require=True):
  """Every prunable weight of `model`, in model order (built models only).

  Raises if the model cannot be cloned (subclassed, or nesting a subclassed
  model), was loaded without a regularizer's class or, with `require`, has
  no prunable weight.
  """
  check_cloneable(model)
  if not model.built:
    raise ValueError(
        f'Model {model.name!r} is not built, so its weights are unknown; '
        'build it first (give it an Input or call model.build(input_shape)).')
  found = [PrunableWeight(f'{path}/{kind.attribute}', layer, kind)
           for path, layer in layers_with_paths(model)
           for kind in PRUNABLE.get(type(layer), ())]
  for weight in found:
    # Keras loads a class it cannot find as its bare name, silently.
    if isinstance(weight.regularizer, str):
      raise ValueError(
          f'Layer {weight.layer.name!r} has {weight.regularizer!r} as its '
          f'{weight.kind.regularizer}: Keras loaded the model without that '
          'class. A model saved under ADMM loads after `import tf_admm`: '
          'import it first, then load the model again.')
  if require and not found:
    raise ValueError(
        f'Model {model.name!r} has no prunable weight; tf_admm prunes the '
        'kernels of ' + ', '.join(sorted({t.__name__ for t in PRUNABLE})) +
        '.')
  return found


def by_layer(pairs) -> dict:
  """{id(layer): [(weight, value), ...]} of [(PrunableWeight, value)]: what
  a clone function, which sees layers, needs of each one's weights."""
  grouped = {}
  for weight, value in pairs:
    grouped.setdefault(id(weight.layer), []).append((weight, value))
  return grouped


def sum_by_layer(model, value_of) -> dict:
  """{layer name: sum of value_of(weight) over its prunable weights}."""
  sums = {}
  for weight in prunable_weights(model):
    sums[weight.layer.name] = sums.get(weight.layer.name, 0) + value_of(weight)
  return sums


def check_masks(prunable, masks) -> None:
  """Raises unless each of `masks` ({path: array}) names one of `prunable`
  ({path: PrunableWeight}) and has its shape."""
  for path, mask in masks.items():
    if path not in prunable:
      raise ValueError(f'A mask is given for {path!r}, which is not a '
                       f'prunable weight; prunable weights are: '
                       f'{", ".join(prunable)}.')
    if np.shape(mask) != prunable[path].shape:
      raise ValueError(f'The mask for {path!r} has shape {np.shape(mask)}, '
                       f'the weight {prunable[path].shape}.')


def unpruned_weights(model, pruned_paths) -> list:
  """[{'path', 'size'}] of the model's weights outside `pruned_paths`:
  biases, normalization parameters, layers left out or not prunable."""
  pruned_paths = set(pruned_paths)
  pruned = {id(w.variable) for w in prunable_weights(model, require=False)
            if w.path in pruned_paths}
  unpruned = []
  for path, layer in layers_with_paths(model):
    for variable in keras_compat.layer_weights(layer):
      if id(variable) not in pruned:
        name = variable.name.split('/')[-1].split(':')[0]
        unpruned.append({'path': f'{path}/{name}',
                         'size': int(np.prod(variable.shape))})
  return unpruned
