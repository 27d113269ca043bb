"""Keras model -> TFLite flatbuffer, in the formats phones run."""

import enum
from typing import Optional

import tensorflow as tf

from tf_admm import keras_compat
from tf_admm import weights


class Quantization(enum.Enum):
  FLOAT32 = 'float32'  # no quantization
  DYNAMIC_INT8 = 'dynamic_int8'  # int8 weights, float activations
  # int8 weights and activations; inputs and outputs keep the model's dtypes
  INT8 = 'int8'


def convert(model,
            quantization: Quantization = Quantization.FLOAT32,
            sparse: bool = False,
            representative_data: Optional[tf.data.Dataset] = None,
            representative_batches: int = 100) -> bytes:
  """Converts a (stripped) tf_keras model to a TFLite flatbuffer.

  Args:
    model: a tf_keras model without pruning wrappers.
    quantization: see `Quantization`.
    sparse: store weight tensors sparse (tf.lite.Optimize.EXPERIMENTAL_SPARSITY).
      The converter leaves tensors under about 30% sparsity dense.
    representative_data: for INT8: a tf.data dataset of (inputs, labels) or
      inputs, batched or not, that calibrates activation ranges.
    representative_batches: how many elements of it calibration reads.

  Returns:
    The .tflite file's bytes.
  """
  wrapped = [path for path, layer in weights.layers_with_paths(model)
             if keras_compat.is_pruning_wrapper(layer)]
  if wrapped:  # they convert, into a model that masks weights at run time
    raise ValueError(
        f'Model {model.name!r} still has pruning wrappers (layers '
        f'{", ".join(wrapped)}): call tf_admm.strip_pruning(model) first.')
  quantization = Quantization(quantization)
  if quantization is Quantization.INT8 and representative_data is None:
    raise ValueError('Full int8 conversion needs representative_data: a '
                     'tf.data dataset of typical inputs for calibration.')
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  optimizations = []
  if quantization is not Quantization.FLOAT32:
    optimizations.append(tf.lite.Optimize.DEFAULT)
  if sparse:
    optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
  converter.optimizations = optimizations
  if quantization is Quantization.INT8:
    converter.representative_dataset = _calibration_inputs(
        representative_data, model.inputs[0], representative_batches)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  return converter.convert()


def _calibration_inputs(dataset, model_input, batches):
  """The converter's representative_dataset: single examples in the model
  input's dtype (float32 images, int32 token ids)."""
  element_rank = model_input.shape.rank - 1

  def generate():
    for element in dataset.take(batches):
      inputs = element[0] if isinstance(element, (tuple, list)) else element
      inputs = tf.cast(inputs, model_input.dtype)
      if inputs.shape.rank == element_rank:
        inputs = inputs[None]
      for example in tf.unstack(inputs):
        yield [example[None]]

  return generate
