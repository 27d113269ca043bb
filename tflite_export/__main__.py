r"""Converts a saved Keras model to TFLite every way and checks each result.

  python -m tflite_export --model=runs/demo/final.keras \
      --output_dir=runs/demo/tflite

Prints a table of raw and gzip sizes and LiteRT accuracy on the dataset's
test split, and writes the .tflite files and tflite_report.json. A model
whose kernels lie on symmetric grids (quantized by tf_admm.Quantize) also
gets the packed INT2/INT4/INT8 variants, packed_weight_only and
packed_dynamic.
"""

import importlib
import json
import os

from absl import app
from absl import flags

import tensorflow as tf

import tf_admm
from tf_admm import dataset_flags
from tf_admm import keras_compat
from tf_admm.keras_compat import keras
from tf_admm.keras_compat import keras3
from tflite_export import report

MODEL = flags.DEFINE_string('model', None, 'Saved Keras model (.keras, .h5 '
                            'or SavedModel folder of tf_keras, or .keras of '
                            'Keras 3), pruning wrappers (held masks) or not.',
                            required=True)
DENSE_MODEL = flags.DEFINE_string(
    'dense_model', None, 'Saved unpruned model whose float32 TFLite is the '
    'size reference. Default: --model without sparse encoding.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where to write the '
                                 '.tflite files and tflite_report.json.')
QUANTIZATIONS = flags.DEFINE_list(
    'quantizations', [q.value for q in report.Quantization],
    'Which of ' + ', '.join(q.value for q in report.Quantization) + '.')
CALIBRATION_EXAMPLES = flags.DEFINE_integer(
    'calibration_examples', 500, 'Training examples that calibrate full int8.')
# --help lists the main module's flags only: list the dataset's there too.
flags.adopt_module_key_flags(dataset_flags)


def load_plain_model(path):
  """Loads a saved model of either Keras and strips any pruning wrappers
  (Keras 2) or held masks (Keras 3)."""
  if not os.path.exists(path):
    raise ValueError(f'No saved model at {path!r}.')
  if keras_compat.saved_by_keras3(path):
    return tf_admm.strip_pruning(keras3.saving.load_model(path))
  # Registers the wrapper classes loading needs; it imports tfmot, which
  # only Keras 2 files need.
  importlib.import_module('tf_admm.pruning_wrapper')
  return tf_admm.strip_pruning(keras.models.load_model(path))


def load_data(model):
  """The --dataset, once checked that it can score `model` (ValueError if
  not): images of the model's input shape, one class per model output."""
  # A tf.DType on Keras 2, a dtype name on Keras 3.
  dtype = tf.as_dtype(model.inputs[0].dtype)
  if not dtype.is_floating:
    raise ValueError(f'The model takes {dtype.name} inputs, not float '
                     'images, so no --dataset can score it: call '
                     'tflite_export.export_variants with test data of its '
                     'own.')
  # Refuses another image shape or class count before preparing anything.
  return dataset_flags.load(model.input_shape[1:], model.output_shape[-1])


def main(argv):
  del argv
  try:
    quantizations = [report.Quantization(q) for q in QUANTIZATIONS.value]
  except ValueError as error:
    raise app.UsageError(f'--quantizations: {error}') from None
  try:
    model = load_plain_model(MODEL.value)
    dense = load_plain_model(DENSE_MODEL.value) if DENSE_MODEL.value else None
    data = load_data(model)
  except ValueError as error:
    raise SystemExit(f'tflite_export: error: {error}') from None
  test = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test))
  calibration = tf.data.Dataset.from_tensor_slices(
      data.x_train[:CALIBRATION_EXAMPLES.value])
  results = report.export_variants(model, test, calibration, dense,
                                   quantizations, OUTPUT_DIR.value)
  try:
    results.update(report.export_packed(model, test,
                                        results['dense']['gzip_bytes'],
                                        OUTPUT_DIR.value))
    note = report.left_float_note(results)
    if note:
      print(note)
  except ValueError as error:
    print(f'No packed INT2/INT4/INT8 variant: {error}')
  print(report.format_table(results))
  if OUTPUT_DIR.value:
    path = os.path.join(OUTPUT_DIR.value, 'tflite_report.json')
    with open(path, 'w') as f:
      json.dump(results, f, indent=2)
    print(f'Wrote {path}')


if __name__ == '__main__':
  app.run(main)
