"""Final masks as tfmot pruning wrappers, for masked retraining and export.

tfmot's `PruneLowMagnitude` recomputes masks by magnitude and lets the
optimizer move pruned weights between its re-maskings. Here the mask comes
from ADMM and must hold exactly, so:
  - `FixedMask` is a pruning schedule that never prunes: tfmot never touches
    the masks we assign;
  - `FixedMaskPruneLowMagnitude` is a `PruneLowMagnitude` that prunes the
    weights tf_admm prunes (depthwise kernels too, which tfmot's registry
    leaves alone) and holds each at zero outside its mask after every
    optimizer step.
The result trains with plain `model.fit`, tfmot's `UpdatePruningStep`
callback or not, and `strip_pruning` turns it into a plain Keras model. This
module imports tfmot; importing it registers the wrapper classes, so models
saved with them load with `keras.models.load_model`.
"""

from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_admm import keras_compat
from tf_admm import attach
from tf_admm import masks as masks_lib
from tf_admm import registration
from tf_admm import weights as weights_lib
from tf_admm.keras_compat import is_model
from tf_admm.keras_compat import keras

tfmot = keras_compat.tfmot()
PruneLowMagnitude = keras_compat.prune_low_magnitude_class()
# Loading a wrapped model needs tfmot's own class too.
keras.utils.get_custom_objects()['PruneLowMagnitude'] = PruneLowMagnitude


@registration.register
class FixedMask(tfmot.sparsity.keras.PruningSchedule):
  """A pruning schedule that never prunes: masks stay as assigned."""

  def __call__(self, step):
    return tf.constant(False), tf.constant(0.0)

  def get_config(self):
    return {'class_name': self.__class__.__name__, 'config': {}}


@registration.register
class FixedMaskPruneLowMagnitude(PruneLowMagnitude):
  """`PruneLowMagnitude` with masks that never change and always hold.

  Args:
    layer: the layer to wrap.
    pruned_weights: the attributes of `layer` it prunes (default: the
      layer's prunable weights, `tf_admm.weights.PRUNABLE`).
  Its masks start as ones; assign them (`to_pruning_wrappers` does). Each
  pruned weight gets a `MaskConstraint`, which the optimizer applies after
  every step, so pruned entries are exactly 0 after each step with any
  optimizer, not only at the next forward pass or epoch end. Its step
  counter starts at 0, so it trains without tfmot's `UpdatePruningStep`.
  """

  def __init__(self, layer, pruned_weights: Optional[Sequence[str]] = None,
               pruning_schedule=None, **kwargs):
    del pruning_schedule  # always FixedMask; accepted for from_config
    if pruned_weights is None:
      pruned_weights = [kind.attribute
                        for kind in weights_lib.PRUNABLE.get(type(layer), ())]
    attributes = list(pruned_weights)
    # tfmot's documented hook for layers it should prune its own way.
    layer.get_prunable_weights = lambda: [
        weights_lib.variable_at(layer, attribute) for attribute in attributes]
    super().__init__(layer, pruning_schedule=FixedMask(), **kwargs)
    self.pruned_weights = attributes

  def add_weight(self, name=None, *args, **kwargs):
    if name == keras_compat.PRUNING_STEP_NAME:
      # Where UpdatePruningStep would set it: FixedMask never reads the step,
      # which only has to pass tfmot's check that the callback ran.
      kwargs['initializer'] = keras.initializers.Constant(0)
    # tfmot gives every pruned weight's variables the same names; a layer
    # pruning two weights (SeparableConv2D) needs distinct ones for legacy
    # H5 files, which store weights by name.
    first, _ = keras_compat.PRUNING_VARIABLE_NAMES
    if name == first:
      self._pruned_index = getattr(self, '_pruned_index', -1) + 1
    if name in keras_compat.PRUNING_VARIABLE_NAMES and getattr(
        self, '_pruned_index', 0):
      name = f'{name}_{self._pruned_index}'
    return super().add_weight(name, *args, **kwargs)

  def build(self, input_shape):
    super().build(input_shape)
    for weight, mask in keras_compat.wrapper_masks(self):
      masks_lib.hold_mask(weight, mask)

  def get_config(self):
    return dict(super().get_config(), pruned_weights=self.pruned_weights)


def wrapped_layers(model, prefix=''):
  """[(path prefix of the inner layer, wrapper)], nested models included."""
  found = []
  for layer in model.layers:
    if isinstance(layer, PruneLowMagnitude):
      found.append((prefix + layer.layer.name, layer))
    elif is_model(layer):
      found += wrapped_layers(layer, prefix + layer.name + '/')
  return found


def to_pruning_wrappers(model,
                        masks: Optional[Mapping[str, np.ndarray]] = None):
  """Hard-prunes `model` to `masks` and wraps the pruned layers for retraining.

  Args:
    model: a Sequential or functional tf_keras model, typically trained under
      ADMM. Its ADMM regularizers are removed; `model` itself is unchanged.
    masks: {weight path: 0/1 array shaped like that weight}. Default:
      `tf_admm.admm_masks(model)`, the support of each ADMM weight's Proj(W).

  Returns:
    A new model with fresh variables in which each masked layer is a
    `FixedMaskPruneLowMagnitude` (a `tfmot.sparsity.keras.PruneLowMagnitude`)
    holding its masks. Compile it and fit it.

  Raises:
    ValueError: as `tf_admm.to_pruning_wrappers`.
  """
  plain, masks, masked_by_layer = attach.without_admm(model, masks)

  def wrap(layer):
    if is_model(layer):
      return keras.models.clone_model(layer, clone_function=wrap)
    if id(layer) in masked_by_layer:
      return FixedMaskPruneLowMagnitude(
          layer, [w.kind.attribute for w, _ in masked_by_layer[id(layer)]])
    return layer

  wrapped = keras.models.clone_model(plain, clone_function=wrap)
  for prefix, wrapper in wrapped_layers(wrapped):
    for attribute, (weight, mask_variable) in zip(
        wrapper.pruned_weights, keras_compat.wrapper_masks(wrapper)):
      mask = np.asarray(
          masks[f'{prefix}/{weights_lib.weight_name(attribute)}'], np.float32)
      mask_variable.assign(mask)
      weight.assign(weight * mask)
  return wrapped


def masks_of(model) -> dict:
  """{weight path: bool mask} of a model's pruning wrappers."""
  return {f'{prefix}/{weights_lib.weight_name(attribute)}': mask.numpy() > 0
          for prefix, wrapper in wrapped_layers(model)
          for attribute, (_, mask) in zip(wrapper.pruned_weights,
                                          keras_compat.wrapper_masks(wrapper))}


def update_pruning_step():
  """tfmot's `UpdatePruningStep` callback, which fitting tfmot's own pruning
  wrappers needs; `FixedMaskPruneLowMagnitude` fits with or without it."""
  return tfmot.sparsity.keras.UpdatePruningStep()


def strip_pruning(model):
  """The plain model inside a wrapped one (tfmot's `strip_pruning`)."""
  return tfmot.sparsity.keras.strip_pruning(model)
