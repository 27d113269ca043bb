"""Masked retraining on either Keras: the final masks held exactly while
the kept weights retrain, then taken off for export.

  - Keras 2: tfmot's pruning wrappers (`tf_admm.pruning_wrapper`), which
    `tfmot.sparsity.keras.strip_pruning` and tfmot's tools understand; that
    module, and so tfmot, is imported on first use only.
  - Keras 3, which tfmot does not support: each masked weight gets a
    `HeldMask` regularizer, a layer that owns the mask (so `.keras` files
    and `BackupAndRestore` keep it) and puts a `MaskConstraint` on the
    weight; it adds no penalty. The model keeps its structure and names.
The three functions take a model of either Keras; neither needs a
callback to hold its masks.
"""

import importlib
from typing import Mapping, Optional

import numpy as np

from tf_admm import attach
from tf_admm import keras_compat
from tf_admm import masks as masks_lib
from tf_admm import registration
from tf_admm import weights as weights_lib
from tf_admm.keras_compat import keras3


def _wrappers():
  """tf_admm.pruning_wrapper, which imports tfmot."""
  return importlib.import_module('tf_admm.pruning_wrapper')


@registration.register
class HeldMask(keras3.layers.Layer, keras3.regularizers.Regularizer):
  """Holds one Keras 3 weight at zero outside `mask`, a variable of its
  own, after every optimizer step; its penalty is `base`'s, if any."""

  def __init__(self, base=None, **kwargs):
    super().__init__(**kwargs)
    self.base = keras3.regularizers.get(base)
    self.mask = None

  def build(self, input_shape):
    self.mask = self.add_weight(shape=tuple(input_shape), initializer='ones',
                                trainable=False, name='mask')

  def __call__(self, weight):
    if not self.built:
      self.build(weight.shape)
    if keras_compat.is_variable(weight):
      masks_lib.hold_mask(weight, self.mask)
    if self.base is None:
      return keras3.ops.zeros(())
    return self.base(weight)

  def get_config(self):
    return dict(super().get_config(),
                base=(keras3.regularizers.serialize(self.base)
                      if self.base is not None else None))


def _held_masks(model):
  """[(PrunableWeight, HeldMask)] of a Keras 3 model."""
  return [(w, w.regularizer)
          for w in weights_lib.prunable_weights(model, require=False)
          if isinstance(w.regularizer, HeldMask)]


def without_admm(model, masks):
  """(a copy of `model` without ADMM regularizers, the masks, and
  {id(layer of the copy): [(PrunableWeight, mask)]}), the masks checked
  against the copy's weights; the masks default to `admm_masks(model)`."""
  quantized = [w.path for w, r in attach.admm_weights(model)
               if r.constraint.has_levels]
  if quantized:
    raise ValueError(
        f'Quantized weights ({", ".join(quantized)}): a mask would hold only '
        'their zeros, and retraining would move the rest off their levels. '
        'Keep training the ADMM model (after the last tf_admm.Rounds '
        'projection every weight stays on its level), then export '
        'tf_admm.remove_admm(model).')
  if masks is None:
    masks = attach.admm_masks(model)
  if not masks:
    raise ValueError('No masks given: nothing to prune.')
  plain = attach.remove_admm(model)
  prunable = {w.path: w for w in weights_lib.prunable_weights(plain)}
  weights_lib.check_masks(prunable, masks)
  return plain, masks, weights_lib.by_layer(
      (prunable[path], mask) for path, mask in masks.items())


def to_pruning_wrappers(model,
                        masks: Optional[Mapping[str, np.ndarray]] = None):
  """Hard-prunes `model` to `masks`, holding them for retraining.

  Args:
    model: a Sequential or functional model of either Keras, typically
      trained under ADMM. Its ADMM regularizers are removed; `model` itself
      is unchanged.
    masks: {weight path: 0/1 array shaped like that weight}. Default:
      `tf_admm.admm_masks(model)`, the support of each ADMM weight's Proj(W).

  Returns:
    A new model with fresh variables, whose masked weights stay exactly 0
    outside their masks through any training: on Keras 2 each masked layer
    is a tfmot `PruneLowMagnitude` (`FixedMaskPruneLowMagnitude`); on Keras
    3 each masked weight has a `HeldMask` regularizer. Compile it and fit it.

  Raises:
    ValueError: for a model whose weights are quantized under ADMM (keep
      training it, then `tf_admm.remove_admm`), or for masks that do not fit.
  """
  if not keras_compat.is_keras3_model(model):
    return _wrappers().to_pruning_wrappers(model, masks)
  plain, masks, masked_by_layer = without_admm(model, masks)

  def configure(layer, config):
    for weight, _ in masked_by_layer.get(id(layer), ()):
      config[weight.kind.regularizer] = HeldMask(
          weight.regularizer, name=f'mask_{weight.path.replace("/", "_")}')
    return config

  held = attach.clone_with(plain, configure)
  for weight, regularizer in _held_masks(held):
    mask = np.asarray(masks[weight.path], np.float32)
    regularizer(weight.variable)  # builds it and holds the mask
    regularizer.mask.assign(mask)
    weight.variable.assign(weight.variable.numpy() * mask)
  return held


def masks_of(model) -> dict:
  """{weight path: bool mask} of a model from `to_pruning_wrappers`."""
  if not keras_compat.is_keras3_model(model):
    return _wrappers().masks_of(model)
  return {w.path: r.mask.numpy() > 0 for w, r in _held_masks(model)}


def strip_pruning(model):
  """The plain model, its weights as they are, without what
  `to_pruning_wrappers` added (on Keras 2, tfmot's `strip_pruning`)."""
  if not keras_compat.is_keras3_model(model):
    return _wrappers().strip_pruning(model)
  held = weights_lib.by_layer(_held_masks(model))

  def configure(layer, config):
    for weight, regularizer in held.get(id(layer), ()):
      config[weight.kind.regularizer] = regularizer.base
    return config

  return attach.clone_with(model, configure)
