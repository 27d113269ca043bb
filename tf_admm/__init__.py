"""tf-admm: ADMM weight and channel pruning and quantization for Keras
models, Keras 3 (`import keras`) and Keras 2 (`import tf_keras`) alike.

Importing tf_admm leaves `keras` and `tf.keras` as they are; tfmot is
imported only when a Keras 2 model is given to masked retraining, or when a
name that is tfmot's own (`FixedMaskPruneLowMagnitude`, ...) is first used.
"""

import importlib

from tf_admm import constraints
from tf_admm.attach import admm_masks
from tf_admm.attach import admm_weights
from tf_admm.attach import attach_admm
from tf_admm.attach import remove_admm
from tf_admm.callback import AdmmCallback
from tf_admm.channel_handlers import register_channel_handler
from tf_admm.constraints import KeepChannels
from tf_admm.constraints import Quantize
from tf_admm.held_mask import HeldMask
from tf_admm.loading import load_model
from tf_admm.masked_retraining import masks_of
from tf_admm.masked_retraining import strip_pruning
from tf_admm.masked_retraining import to_pruning_wrappers
from tf_admm.masks import MaskConstraint
from tf_admm.regularizer import AdmmRegularizer
from tf_admm.regularizer import Keras3AdmmRegularizer
from tf_admm.schedules import PolynomialRamp
from tf_admm.schedules import Rounds
from tf_admm.schedules import ScheduleNotFinished
from tf_admm.schedules import Stages
from tf_admm.surgery import remove_channels
from tf_admm.targets import CompressionRate
from tf_admm.targets import KeepRatio
from tf_admm.targets import Sparsity
from tf_admm.targets import keep_counts
from tf_admm.weights import prunable_weights
from tf_admm.weights import register_prunable

__version__ = '0.2.0'  # the one place the version is written

_PRUNING_WRAPPER_NAMES = ('FixedMask', 'FixedMaskPruneLowMagnitude',
                          'update_pruning_step')


def __getattr__(name):
  if name in _PRUNING_WRAPPER_NAMES:
    module = importlib.import_module('tf_admm.pruning_wrapper')
    return getattr(module, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
