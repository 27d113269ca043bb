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
  """One prunable weight of a layer class."""
  # Where the layer holds the variable: an attribute, or a dotted path to
  # one of an inner object ('cell.kernel' for a recurrent layer's cell).
  attribute: str
  # The constructor argument (and attribute of the variable's owner) that
  # holds the weight's regularizer.
  regularizer: str
  # The axis summed over when the weight is applied (the input dimension of
  # a matrix product), along which N:M groups run; None where there is none
  # (a depthwise kernel mixes no channels, an embedding is a lookup).
  input_axis: Optional[int]
  # The output-channel axis, along which per-channel quantization scales
  # run (TFLite's quantized dimension); None where the tensor has one scale.
  output_axis: Optional[int] = -1

  @property
  def name(self) -> str:
    """The weight's name in paths: the attribute without its owners."""
    return weight_name(self.attribute)

  def owner(self, layer):
    """The object that holds the variable: `layer` or an object inside it."""
    return attribute_owner(layer, self.attribute)

  def variable_of(self, layer):
    return variable_at(layer, self.attribute)


def weight_name(attribute: str) -> str:
  """'kernel' of the attribute 'cell.kernel': how paths name the weight."""
  return attribute.rsplit('.', 1)[-1]


def attribute_owner(layer, attribute: str):
  """The object inside `layer` (or `layer`) that the dotted `attribute`
  ends on."""
  for part in attribute.split('.')[:-1]:
    layer = getattr(layer, part)
  return layer


def variable_at(layer, attribute: str):
  """The variable at the dotted `attribute` of `layer`."""
  return getattr(attribute_owner(layer, attribute), weight_name(attribute))


_KERNEL = WeightKind('kernel', 'kernel_regularizer', -2)
_MATRIX = WeightKind('kernel', 'kernel_regularizer', 0)
# A transposed convolution's kernel is (..., filters, input channels).
_TRANSPOSED = WeightKind('kernel', 'kernel_regularizer', -1, -2)
_POINTWISE = WeightKind('pointwise_kernel', 'pointwise_regularizer', -2)
# A recurrent layer's input and recurrent kernels, (inputs or units, gates
# * units), live in its cell.
_RECURRENT = (WeightKind('cell.kernel', 'kernel_regularizer', 0),
              WeightKind('cell.recurrent_kernel', 'recurrent_regularizer', 0))
# Which axis an einsum kernel sums over depends on its equation.
_EINSUM = WeightKind('kernel', 'kernel_regularizer', None)


def _prunable(layers, depthwise_attribute: str) -> dict:
  """{layer class: its prunable weights} for one Keras's `layers` module,
  whose depthwise convolutions hold their kernel as `depthwise_attribute`
  (Keras 3 names it `kernel`, Keras 2 `depthwise_kernel`; both take it as
  `depthwise_regularizer`)."""
  depthwise = WeightKind(depthwise_attribute, 'depthwise_regularizer', None,
                         None)
  separable = (WeightKind('depthwise_kernel', 'depthwise_regularizer', None,
                          None), _POINTWISE)
  return {
      layers.Dense: (_MATRIX,),
      layers.EinsumDense: (_EINSUM,),
      layers.Conv1D: (_KERNEL,),
      layers.Conv2D: (_KERNEL,),
      layers.Conv3D: (_KERNEL,),
      layers.Conv2DTranspose: (_TRANSPOSED,),
      layers.Conv3DTranspose: (_TRANSPOSED,),
      layers.DepthwiseConv1D: (depthwise,),
      layers.DepthwiseConv2D: (depthwise,),
      layers.SeparableConv1D: separable,
      layers.SeparableConv2D: separable,
      layers.Embedding: (
          WeightKind('embeddings', 'embeddings_regularizer', None, 0),),
      layers.SimpleRNN: _RECURRENT,
      layers.GRU: _RECURRENT,
      layers.LSTM: _RECURRENT,
  }


# Matched by exact class, as tfmot's registry matches them: a subclass may
# compute something else with the same variables. Both Kerases' classes,
# and those a user registers.
PRUNABLE = {**_prunable(keras.layers, 'depthwise_kernel'),
            **_prunable(keras3.layers, 'kernel')}


def register_prunable(layer_class, weight_names) -> None:
  """Makes the weights `weight_names` of `layer_class` prunable.

  Args:
    layer_class: a layer class of either Keras, matched exactly (not its
      subclasses).
    weight_names: each the attribute holding one weight variable ('kernel';
      'cell.kernel' for a variable of an object inside the layer), whose
      regularizer the layer takes as the constructor argument and attribute
      `<name>_regularizer`; or a `WeightKind`, to name another argument or
      the weight's input and output axes (by default those of a matrix
      product: -2 and -1).

  `attach_admm` then puts each such weight under ADMM by giving the layer
  an ADMM regularizer through that argument, so the layer must pass it to
  `add_weight(..., regularizer=...)` and return it from `get_config`.
  """
  if not isinstance(layer_class, type):
    raise TypeError(f'register_prunable takes a layer class, got '
                    f'{layer_class!r}.')
  if isinstance(weight_names, (str, WeightKind)):
    weight_names = [weight_names]
  kinds = []
  for name in weight_names:
    if isinstance(name, str):
      name = WeightKind(name, f'{name.rsplit(".", 1)[-1]}_regularizer', -2)
    if not isinstance(name, WeightKind):
      raise TypeError(f'register_prunable: each weight is an attribute name '
                      f'or a tf_admm.weights.WeightKind, got {name!r}.')
    kinds.append(name)
  if not kinds:
    raise ValueError(f'register_prunable({layer_class.__name__}) names no '
                     'weight.')
  PRUNABLE[layer_class] = tuple(kinds)


@dataclasses.dataclass(frozen=True)
class PrunableWeight:
  path: str  # 'block/conv/kernel'
  layer: object  # a layer of either Keras
  kind: WeightKind

  @property
  def layer_path(self) -> str:
    """'block/conv': the path of the layer holding the weight."""
    return self.path.rsplit('/', 1)[0]

  @property
  def variable(self):
    return self.kind.variable_of(self.layer)

  @property
  def regularizer(self):
    return getattr(self.kind.owner(self.layer), self.kind.regularizer)

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
  found = [PrunableWeight(f'{path}/{kind.name}', layer, kind)
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


def unknown_matrices(model) -> list:
  """[(path, size)] of the trainable weight matrices (rank 2 or more, not
  biases) of layers with no prunable weight: what tf_admm cannot prune
  until the layer class is registered (`register_prunable`)."""
  found = []
  for path, layer in layers_with_paths(model):
    if type(layer) in PRUNABLE:
      continue
    for variable in keras_compat.layer_weights(layer):
      name = keras_compat.variable_path(variable)
      if (variable.trainable and len(variable.shape) >= 2 and
          not name.split('/')[-1].startswith('bias')):
        found.append((f'{path}/{name.split("/", 1)[-1]}',
                      int(np.prod(variable.shape))))
  return found
