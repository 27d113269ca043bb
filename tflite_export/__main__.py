r"""Converts a saved Keras model to TFLite every way and checks each result.

  python -m tflite_export --model=runs/demo/final.keras \
      --output_dir=runs/demo/tflite

Prints a table of raw and gzip sizes and LiteRT accuracy on the dataset's
test split, and writes the .tflite files and tflite_report.json. A model
whose kernels lie on symmetric grids (quantized by tf_admm.Quantize) also
gets the packed INT2/INT4/INT8 variants, packed_weight_only and
packed_dynamic. With --micro, also the TensorFlow Lite for Microcontrollers
file (micro.tflite; tflite_export.micro), scored in the TFLM interpreter,
its flash and arena bytes under "micro" in tflite_report.json.
"""

import os

from absl import app
from absl import flags

import tensorflow as tf

import tf_admm
from tf_admm import dataset_flags
from tf_admm import run_files
from tflite_export import micro
from tflite_export import micro_flag
from tflite_export import report
from tflite_export import tflm

MODEL = flags.DEFINE_string('model', None, 'Saved Keras model (.keras, .h5 '
                            'or SavedModel folder of tf_keras, or .keras of '
                            'Keras 3), pruning wrappers (held masks) or not. '
                            'A file holding code (a Lambda layer, a class '
                            'Keras does not know) is refused unless '
                            '--unsafe_load.', required=True)
DENSE_MODEL = flags.DEFINE_string(
    'dense_model', None, 'Saved unpruned model whose float32 TFLite is the '
    'size reference. Default: --model without sparse encoding.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where to write the '
                                 '.tflite files and tflite_report.json.')
OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Write into --output_dir even if it holds files that '
    'no export wrote (no tflite_report.json there).')
UNSAFE_LOAD = flags.DEFINE_bool(
    'unsafe_load', False, 'Load --model and --dense_model even if they hold '
    'code (Lambda layers, unknown classes), which then runs: only for files '
    'from a source you trust.')
QUANTIZATIONS = flags.DEFINE_list(
    'quantizations', [q.value for q in report.Quantization],
    'Which of ' + ', '.join(q.value for q in report.Quantization) + '.')
CALIBRATION_EXAMPLES = flags.DEFINE_integer(
    'calibration_examples', 500, 'Training examples that calibrate full int8.')
# --help lists the main module's flags only: list the dataset's there too.
flags.adopt_module_key_flags(dataset_flags)
flags.adopt_module_key_flags(micro_flag)


def load_plain_model(path, safe_mode=True):
  """Loads a saved model of either Keras (refusing one that holds code,
  unless not `safe_mode`) and strips any pruning wrappers (Keras 2) or held
  masks (Keras 3)."""
  if os.path.isdir(path) and os.path.exists(os.path.join(path, 'run.json')):
    raise ValueError(f'{path!r} is a run folder; give the model in it '
                     f'({os.path.join(path, "final.keras")}).')
  try:
    model = tf_admm.load_model(path, safe_mode=safe_mode)
  except ValueError:
    raise
  except Exception as error:  # zip, h5py and Keras raise many kinds
    raise ValueError(f'{path} cannot be loaded as a Keras model '
                     f'({run_files.describe_error(error)}).') from None
  return tf_admm.strip_pruning(model)


def check_output_dir(folder):
  """Refuses an --output_dir that is a file, or a folder holding files no
  export wrote (unless --overwrite), before any conversion."""
  if folder is None:
    return
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise ValueError(f'--output_dir {folder!r} is a file; give a folder.')
  if (os.path.isdir(folder) and os.listdir(folder) and not OVERWRITE.value
      and not os.path.exists(os.path.join(folder, REPORT_NAME))):
    raise ValueError(
        f'--output_dir {folder!r} holds files no export wrote ('
        f'{", ".join(sorted(os.listdir(folder))[:5])}), which it could '
        'overwrite: choose another folder, or pass --overwrite.')


REPORT_NAME = 'tflite_report.json'


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
  micro_asked = micro_flag.MICRO.value
  if ((report.Quantization.INT8 in quantizations or micro_asked) and
      CALIBRATION_EXAMPLES.value < 1):
    raise app.UsageError('--quantizations=int8 and --micro calibrate on '
                         '--calibration_examples training examples: give at '
                         'least 1 (500 by default), or leave them out.')
  try:
    if micro_asked:
      tflm.check_available()
    check_output_dir(OUTPUT_DIR.value)
    safe_mode = not UNSAFE_LOAD.value
    model = load_plain_model(MODEL.value, safe_mode)
    dense = (load_plain_model(DENSE_MODEL.value, safe_mode)
             if DENSE_MODEL.value else None)
    data = load_data(model)
    test = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test))
    calibration = tf.data.Dataset.from_tensor_slices(
        data.x_train[:CALIBRATION_EXAMPLES.value])
    results = report.export_variants(model, test, calibration, dense,
                                     quantizations, OUTPUT_DIR.value)
    micro_report = (micro.export_micro(model, data.x_test, data.y_test,
                                       calibration, OUTPUT_DIR.value)
                    if micro_asked else None)
  except ValueError as error:
    raise SystemExit(f'tflite_export: error: {error}') from None
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
  if micro_report:
    print(micro.summary_line(micro_report))
    results['micro'] = micro_report
  if OUTPUT_DIR.value:
    path = os.path.join(OUTPUT_DIR.value, REPORT_NAME)
    run_files.write_json(path, results)
    print(f'Wrote {path}')


def run():
  """The console script `tf-admm-export`."""
  dataset_flags.run_with_help(__name__, main)


if __name__ == '__main__':
  app.run(main)
