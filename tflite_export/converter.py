"""Keras model -> TFLite flatbuffer, in the formats phones run.

Keras 2 (tf_keras) models convert with `tf.lite.TFLiteConverter
.from_keras_model`; Keras 3 models with their own LiteRT export
(`model.export(..., format='litert')`, which traces the model into a
SavedModel and converts that). Both get the same converter settings.
"""

import enum
from typing import Optional

import tensorflow as tf

from tf_admm import backends
from tf_admm import keras_compat
from tf_admm import weights
from tflite_export import packed


class Quantization(enum.Enum):
  FLOAT32 = 'float32'  # no quantization
  DYNAMIC_INT8 = 'dynamic_int8'  # int8 weights, float activations
  # int8 weights and activations; inputs and outputs keep the model's dtypes
  INT8 = 'int8'


def convert(model,
            quantization: Quantization = Quantization.FLOAT32,
            sparse: bool = False,
            representative_data: Optional[tf.data.Dataset] = None,
            representative_batches: int = 100,
            integer_io: bool = False) -> bytes:
  """Converts a (stripped) model of either Keras to a TFLite flatbuffer.

  The file takes the model's first input with a batch dimension of any size
  (resize the interpreter's input), or of 1 for a model with a recurrent
  layer (whose TFLite ops keep their state at a fixed batch size), and uses
  built-in LiteRT ops only.

  Args:
    model: a tf_keras model without pruning wrappers, or a Keras 3 model
      on the TensorFlow backend (regularizers, ADMM's included, act in
      training only and leave the file as it would be without them).
    quantization: see `Quantization`.
    sparse: store weight tensors sparse (tf.lite.Optimize.EXPERIMENTAL_SPARSITY).
      The converter leaves tensors under about 30% sparsity dense.
    representative_data: for INT8: a tf.data dataset of (inputs, labels) or
      inputs, batched or not, that calibrates activation ranges.
    representative_batches: how many elements of it calibration reads.
    integer_io: for INT8: int8 inputs and outputs too (their scales and
      zero points in the file), as TensorFlow Lite for Microcontrollers runs
      them; by default they keep the model's dtypes.

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
  if integer_io and quantization is not Quantization.INT8:
    raise ValueError('integer_io=True needs Quantization.INT8: only a full '
                     'int8 model has int8 inputs and outputs.')
  settings = _converter_settings(model, quantization, sparse,
                                 representative_data, representative_batches)
  if integer_io:
    settings.update(inference_input_type=tf.int8,
                    inference_output_type=tf.int8)
  content = backends.backend_of(model).convert(
      model, settings, batch=1 if _recurrent(model) else None)
  _check_kernel_types(content, quantization)
  return content


def _recurrent(model) -> bool:
  """Whether `model` has a recurrent layer: its TFLite op (a fused LSTM or
  a loop over the steps) needs a fixed batch size, and keeps its state at
  that size."""
  keras = keras_compat.keras_of(model)
  return any(isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))
             for _, layer in weights.layers_with_paths(model))


# The converter's dynamic-range quantization leaves smaller tensors float.
_DYNAMIC_MIN_ELEMENTS = 1024


def _check_kernel_types(content: bytes, quantization: Quantization) -> None:
  """Raises if a kernel the quantization should have made int8 is still
  float32 (the converter falls back to float silently, as it does when
  calibration data is empty)."""
  if quantization is Quantization.FLOAT32:
    return
  smallest = (_DYNAMIC_MIN_ELEMENTS
              if quantization is Quantization.DYNAMIC_INT8 else 0)
  left = [name for name, size in packed.float_kernel_sizes(content).items()
          if size >= smallest]
  if left:
    raise ValueError(
        f'The {quantization.value} conversion left kernels in float32 '
        f'({", ".join(left)}), so the file is not the {quantization.value} '
        'model asked for' + (': check that the calibration data is not '
                             'empty.' if quantization is Quantization.INT8
                             else '.'))


def _converter_settings(model, quantization, sparse, representative_data,
                        representative_batches) -> dict:
  """{TFLiteConverter attribute: value}, with 'target_spec' a dict of
  target_spec attributes: the form Keras 3's LiteRT export takes them in."""
  if quantization is Quantization.INT8 and (
      representative_data is None or representative_data.cardinality() == 0):
    raise ValueError('Full int8 conversion needs representative_data: a '
                     'tf.data dataset of typical inputs for calibration '
                     '(one that is not empty).')
  optimizations = []
  if quantization is not Quantization.FLOAT32:
    optimizations.append(tf.lite.Optimize.DEFAULT)
  if sparse:
    optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
  # Built-in ops only: Keras 3's export also allows SELECT_TF_OPS (Flex),
  # which LiteRT without the Flex delegate cannot run.
  settings = {'optimizations': optimizations, 'target_spec': {
      'supported_ops': [tf.lite.OpsSet.TFLITE_BUILTINS]}}
  if quantization is Quantization.INT8:
    settings['representative_dataset'] = _calibration_inputs(
        representative_data, model.inputs[0], representative_batches)
    settings['target_spec'] = {
        'supported_ops': [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
  return settings


def _calibration_inputs(dataset, model_input, batches):
  """The converter's representative_dataset: single examples in the model
  input's dtype (float32 images, int32 token ids)."""
  # Keras 2 inputs have a TensorShape and tf.DType; Keras 3 ones a tuple and
  # a dtype name.
  element_rank = len(model_input.shape) - 1
  dtype = tf.as_dtype(model_input.dtype)

  def generate():
    for element in dataset.take(batches):
      inputs = element[0] if isinstance(element, (tuple, list)) else element
      inputs = tf.cast(inputs, dtype)
      if inputs.shape.rank == element_rank:
        inputs = inputs[None]
      for example in tf.unstack(inputs):
        yield [example[None]]

  return generate
