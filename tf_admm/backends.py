"""One backend per Keras: everything tf_admm does differently on Keras 2
(tf_keras) and Keras 3, behind one interface, chosen once per model.

  - `Keras2Backend`: tfmot's pruning wrappers hold the masks (tfmot 0.8
    accepts only Keras 2); TFLite through `TFLiteConverter.from_keras_model`.
  - `Keras3Backend`: `HeldMask` regularizers hold them; LiteRT through
    Keras 3's own `model.export(format='litert')`, on the TensorFlow backend.

The rest of tf_admm (weights, constraints, the ADMM steps, the channel
graph, surgery, MACs) is written once for both; a feature that only one
Keras can have says which dependency forbids it on the other.
"""

import importlib
import os
import tempfile
from typing import Optional

import tensorflow as tf

from tf_admm import keras_compat
from tf_admm import regularizer as regularizer_lib


class Keras2Backend:
  """Keras 2 (tf_keras), the only Keras tfmot 0.8 accepts."""

  keras = keras_compat.keras
  name = 'Keras 2'

  def new_regularizer(self, weight, constraint, rho):
    """The ADMM regularizer of `weight` (a PrunableWeight), with the
    layer's own regularizer kept as its base."""
    return regularizer_lib.AdmmRegularizer(constraint, rho,
                                           base=weight.regularizer)

  # Its masked retraining (imported on first use: this one imports tfmot).
  retraining_module = 'tf_admm.pruning_wrapper'

  def retraining(self):
    """The module holding and releasing masks on this Keras: its
    `to_pruning_wrappers`, `masks_of` and `strip_pruning`."""
    return importlib.import_module(self.retraining_module)

  def convert(self, model, settings: dict, batch: Optional[int]) -> bytes:
    """The .tflite bytes of `model` under `settings` ({TFLiteConverter
    attribute: value}, 'target_spec' a dict of its attributes), its input
    taking `batch` examples (None: any number)."""
    if batch:
      spec = tf.TensorSpec([batch, *model.inputs[0].shape[1:]],
                           model.inputs[0].dtype)
      converter = tf.lite.TFLiteConverter.from_concrete_functions(
          [tf.function(model).get_concrete_function(spec)], model)
    else:
      converter = tf.lite.TFLiteConverter.from_keras_model(model)
    for name, value in settings.items():
      if name == 'target_spec':
        for spec_name, spec_value in value.items():
          setattr(converter.target_spec, spec_name, spec_value)
      else:
        setattr(converter, name, value)
    return converter.convert()


class Keras3Backend:
  """Keras 3 on the TensorFlow backend, without tfmot."""

  keras = keras_compat.keras3
  name = 'Keras 3'

  def new_regularizer(self, weight, constraint, rho):
    return regularizer_lib.Keras3AdmmRegularizer(
        constraint, rho, base=weight.regularizer,
        name=f'admm_{weight.path.replace("/", "_")}')

  retraining_module = 'tf_admm.held_mask'
  retraining = Keras2Backend.retraining

  def convert(self, model, settings: dict, batch: Optional[int]) -> bytes:
    """Keras 3's LiteRT export under the same settings. Without `batch`,
    Keras infers the input signature from the model's inputs with the batch
    dimension left free, as `from_keras_model` does for Keras 2."""
    keras_compat.check_backend(model)
    if batch:
      settings = dict(settings, input_signature=[self.keras.InputSpec(
          shape=(batch, *model.inputs[0].shape[1:]),
          dtype=model.inputs[0].dtype)])
    with tempfile.TemporaryDirectory() as folder:
      path = os.path.join(folder, 'model.tflite')
      model.export(path, format='litert', verbose=False, **settings)
      with open(path, 'rb') as f:
        return f.read()


KERAS2, KERAS3 = Keras2Backend(), Keras3Backend()


def backend_of(obj):
  """The backend of the Keras `obj` (a model, layer or variable) belongs
  to."""
  return KERAS3 if keras_compat.is_keras3(obj) else KERAS2
