"""Masked retraining on Keras 3, which tfmot does not support: each masked
weight gets a `HeldMask` regularizer, a layer that owns the mask (so
`.keras` files and `BackupAndRestore` keep it) and puts a `MaskConstraint`
on the weight; it adds no penalty. The model keeps its structure and names.
`tf_admm.backends` calls these for Keras 3 models.
"""

import numpy as np

from tf_admm import attach
from tf_admm import keras_compat
from tf_admm import masks as masks_lib
from tf_admm import registration
from tf_admm import weights as weights_lib
from tf_admm.keras_compat import keras3


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


def to_pruning_wrappers(model, masks=None):
  """`tf_admm.to_pruning_wrappers` for a Keras 3 model."""
  plain, masks, masked_by_layer = attach.without_admm(model, masks)

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
  """{weight path: bool mask} of a Keras 3 model from `to_pruning_wrappers`."""
  return {w.path: r.mask.numpy() > 0 for w, r in _held_masks(model)}


def strip_pruning(model):
  """The plain Keras 3 model without its `HeldMask`s, weights as they are."""
  return attach.with_base_regularizers(model, _held_masks(model))
