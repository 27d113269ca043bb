"""Final masks as tfmot pruning wrappers, for masked retraining and export.

tfmot's `PruneLowMagnitude` recomputes masks by magnitude and lets the
optimizer move pruned weights between its re-maskings. Here the mask comes
from ADMM and must hold exactly, so:
  - `FixedMask` is a pruning schedule that never prunes: tfmot never touches
    the masks we assign;
  - `FixedMaskPruneLowMagnitude` is a `PruneLowMagnitude` that also holds each
    weight at zero outside its mask after every optimizer step.
The result trains with plain `model.fit` plus tfmot's `UpdatePruningStep`, and
`tfmot.sparsity.keras.strip_pruning` turns it into a plain Keras model.
"""

from typing import Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
# The wrapper class itself is not in tfmot's public API, only its factory.
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude
import tf_keras as keras

from tf_admm import attach
from tf_admm import masks as masks_lib
from tf_admm import registration
from tf_admm import targets


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

  Its masks start as ones; assign them (`to_pruning_wrappers` does). Each
  pruned weight gets a `MaskConstraint`, which the optimizer applies after
  every step, so pruned entries are exactly 0 after each step with any
  optimizer, not only at the next forward pass or epoch end.
  """

  def __init__(self, layer, pruning_schedule=None, **kwargs):
    del pruning_schedule  # always FixedMask; accepted for from_config
    super().__init__(layer, pruning_schedule=FixedMask(), **kwargs)

  def build(self, input_shape):
    super().build(input_shape)
    for weight, mask, _ in self.pruning_vars:
      masks_lib.hold_mask(weight, mask)


# Loading a wrapped model needs tfmot's own classes too.
keras.utils.get_custom_objects()['PruneLowMagnitude'] = PruneLowMagnitude


def wrapped_layers(model):
  return [l for l in model.layers if isinstance(l, PruneLowMagnitude)]


def to_pruning_wrappers(model,
                        masks: Optional[Mapping[str, np.ndarray]] = None):
  """Hard-prunes `model` to `masks` and wraps the pruned layers for retraining.

  Args:
    model: a Sequential or functional tf_keras model, typically trained under
      ADMM. Its ADMM regularizers are removed; `model` itself is unchanged.
    masks: {layer name: 0/1 array shaped like that layer's kernel}. Default:
      `tf_admm.admm_masks(model)`, the support of each ADMM layer's Proj(W).

  Returns:
    A new model with fresh variables in which each masked layer is a
    `FixedMaskPruneLowMagnitude` (a `tfmot.sparsity.keras.PruneLowMagnitude`)
    holding its mask. Compile it and fit with
    `tfmot.sparsity.keras.UpdatePruningStep()`.
  """
  if masks is None:
    masks = attach.admm_masks(model)
  if not masks:
    raise ValueError('No masks given: nothing to prune.')
  plain = attach.remove_admm(model)
  if not plain.built:
    raise ValueError('Masks need a built model: build it first (give it an '
                     'Input or call model.build(input_shape)).')
  kernels = {l.name: l.kernel for l in targets.prunable_layers(plain)}
  for name, mask in masks.items():
    if name not in kernels:
      raise ValueError(f'A mask is given for {name!r}, which is not a '
                       f'prunable layer; prunable layers are: '
                       f'{", ".join(kernels)}.')
    if np.shape(mask) != tuple(kernels[name].shape):
      raise ValueError(f'Mask for layer {name!r} has shape {np.shape(mask)}, '
                       f'its kernel {tuple(kernels[name].shape)}.')

  wrapped = keras.models.clone_model(
      plain,
      clone_function=lambda layer: (FixedMaskPruneLowMagnitude(layer)
                                    if layer.name in masks else layer))
  for wrapper in wrapped_layers(wrapped):
    mask = np.asarray(masks[wrapper.layer.name], np.float32)
    (weight, mask_variable, _), = wrapper.pruning_vars
    mask_variable.assign(mask)
    weight.assign(weight * mask)
  return wrapped


def masks_of(model) -> dict:
  """{inner layer name: bool mask} of a model's pruning wrappers."""
  return {w.layer.name: w.pruning_vars[0][1].numpy() > 0
          for w in wrapped_layers(model)}
