"""tf-admm: ADMM weight pruning for tf_keras models, exported through tfmot."""

import os

# tfmot 0.8 works only with Keras 2 (tf_keras). This must be set before
# TensorFlow is first imported; it is the one place the project sets it.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
from tf_admm.attach import admm_layers
from tf_admm.attach import admm_masks
from tf_admm.attach import attach_admm
from tf_admm.attach import remove_admm
from tf_admm.callback import AdmmCallback
from tf_admm.masks import MaskConstraint
from tf_admm.projections import keep_top_k
from tf_admm.pruning_wrapper import FixedMask
from tf_admm.pruning_wrapper import FixedMaskPruneLowMagnitude
from tf_admm.pruning_wrapper import masks_of
from tf_admm.pruning_wrapper import to_pruning_wrappers
from tf_admm.regularizer import AdmmRegularizer
from tf_admm.schedules import PolynomialRamp
from tf_admm.targets import CompressionRate
from tf_admm.targets import KeepRatio
from tf_admm.targets import Sparsity
from tf_admm.targets import keep_counts
from tf_admm.targets import prunable_layers

__version__ = '0.1.0'
