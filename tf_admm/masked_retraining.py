"""Masked retraining on either Keras: the final masks held exactly while
the kept weights retrain, then taken off for export.

  - Keras 2: tfmot's pruning wrappers (`tf_admm.pruning_wrapper`), which
    `tfmot.sparsity.keras.strip_pruning` and tfmot's tools understand; that
    module, and so tfmot, is imported on first use only.
  - Keras 3, which tfmot does not support: `HeldMask` regularizers
    (`tf_admm.held_mask`).
The three functions take a model of either Keras (its backend,
`tf_admm.backends`, does the work); neither needs a callback to hold its
masks.
"""

from typing import Mapping, Optional

import numpy as np

from tf_admm import backends


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
  return backends.backend_of(model).retraining().to_pruning_wrappers(model, masks)


def masks_of(model) -> dict:
  """{weight path: bool mask} of a model from `to_pruning_wrappers`."""
  return backends.backend_of(model).retraining().masks_of(model)


def strip_pruning(model):
  """The plain model, its weights as they are, without what
  `to_pruning_wrappers` added (on Keras 2, tfmot's `strip_pruning`)."""
  return backends.backend_of(model).retraining().strip_pruning(model)
