import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_admm
import tflite_export
from tests.conftest import nested_model
from tests.conftest import project_kernels
from tests.conftest import token_model
from tf_admm import constraints
from tf_admm.keras_compat import keras
from tflite_export import Quantization
from tflite_export import evaluate
from tflite_export import packed


def _keras_accuracy(model, x, y):
  return float(np.mean(np.argmax(model.predict(x, batch_size=1000, verbose=0),
                                 -1) == y))


@pytest.fixture(scope='module')
def exported(mnist, pruned_lenet5):
  x, _, x_test, y_test = mnist
  model, dense = pruned_lenet5
  test = tf.data.Dataset.from_tensor_slices((x_test, y_test))
  calibration = tf.data.Dataset.from_tensor_slices(x[:500]).batch(50)
  return tflite_export.export_variants(model, test, calibration,
                                       dense_model=dense)


def test_pruned_model_is_at_least_50x(pruned_lenet5):
  model, _ = pruned_lenet5
  kernels = [w.variable.numpy() for w in tf_admm.prunable_weights(model)]
  total = sum(k.size for k in kernels)
  assert total / sum(np.count_nonzero(k) for k in kernels) >= 50


def test_top1_hits_and_accuracy_count_argmax_at_label():
  outputs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
  labels = np.array([1, 1, 1, 0])
  np.testing.assert_array_equal(evaluate.top1_hits(outputs, labels),
                                [True, False, True, True])
  assert evaluate.top1_accuracy(outputs, labels) == 0.75


def test_tflite_accuracy_matches_keras(mnist, pruned_lenet5, exported):
  _, _, x_test, y_test = mnist
  model, dense = pruned_lenet5
  keras_accuracy = _keras_accuracy(model, x_test, y_test)
  print(tflite_export.format_table(exported))
  print(f'Keras accuracy of the pruned model: {keras_accuracy:.4f}')
  assert abs(exported['dense']['accuracy'] -
             _keras_accuracy(dense, x_test, y_test)) <= 0.0005
  for variant in ('float32', 'float32_sparse'):
    assert abs(exported[variant]['accuracy'] - keras_accuracy) <= 0.0005
  for variant in ('int8', 'int8_sparse'):
    assert abs(exported[variant]['accuracy'] - keras_accuracy) <= 0.003


def test_sparse_int8_is_30x_smaller_than_dense_float_after_gzip(exported):
  dense_gzip = exported['dense']['gzip_bytes']
  assert dense_gzip / exported['int8_sparse']['gzip_bytes'] >= 30
  assert exported['int8_sparse']['gzip_ratio'] >= 30
  # Sparse encoding shrinks the raw file; without it only gzip does.
  assert exported['float32_sparse']['bytes'] < exported['float32']['bytes'] / 5
  assert exported['float32']['bytes'] == exported['dense']['bytes']


def test_predict_takes_batched_or_unbatched_data(mnist, pruned_lenet5):
  _, _, x_test, y_test = mnist
  model, _ = pruned_lenet5
  content = tflite_export.convert(model)
  data = tf.data.Dataset.from_tensor_slices((x_test[:300], y_test[:300]))
  unbatched, labels, _ = tflite_export.predict(content, data, batch_size=128)
  batched, _, _ = tflite_export.predict(content, data.batch(7))
  np.testing.assert_array_equal(labels, y_test[:300])
  np.testing.assert_allclose(unbatched, batched, atol=1e-5)
  np.testing.assert_allclose(unbatched, model.predict(x_test[:300], verbose=0),
                             atol=1e-4)


def test_latency_is_measured_on_every_variant(mnist, pruned_lenet5):
  model, _ = pruned_lenet5
  calibration = tf.data.Dataset.from_tensor_slices(mnist[0][:50])
  content = tflite_export.convert(model, Quantization.INT8, sparse=True,
                                  representative_data=calibration)
  seconds, runtime = tflite_export.latency_seconds(content, mnist[2][0],
                                                   runs=20)
  assert 0 < seconds < 0.1 and runtime in ('xnnpack', 'builtin')


def test_int8_without_calibration_data_is_rejected(pruned_lenet5):
  with pytest.raises(ValueError, match='representative_data'):
    tflite_export.convert(pruned_lenet5[0], Quantization.INT8)


def test_a_model_with_pruning_wrappers_is_refused():
  model = nested_model()
  wrapped = tf_admm.to_pruning_wrappers(model, {
      w.path: np.ones(w.shape, bool) for w in tf_admm.prunable_weights(model)
      if w.path in ('block/ic/kernel', 'out/kernel')})
  message = (f'Model {wrapped.name!r} still has pruning wrappers (layers '
             'block/fixed_mask_prune_low_magnitude_ic, '
             'fixed_mask_prune_low_magnitude_out): call '
             'tf_admm.strip_pruning(model) first.')
  with pytest.raises(ValueError, match=re.escape(message)):
    tflite_export.convert(wrapped)


@pytest.fixture(scope='module')
def token_ids():
  """(int64 ids for token_model, (ids, dummy label) pairs for predict)."""
  ids = np.random.default_rng(0).integers(0, 50, size=(200, 10))
  return ids, tf.data.Dataset.from_tensor_slices((ids, np.zeros(200)))


@pytest.mark.parametrize('sparse', [False, True])
@pytest.mark.parametrize('quantization', list(Quantization))
def test_token_model_matches_keras_in_every_variant(token_ids, quantization,
                                                    sparse):
  ids, data = token_ids
  model = token_model()
  # Calibration and inference cast the ids to the int32 input, unscaled.
  content = tflite_export.convert(
      model, quantization, sparse,
      representative_data=tf.data.Dataset.from_tensor_slices(ids).batch(20))
  outputs, _, _ = tflite_export.predict(content, data)
  want = model.predict(ids, verbose=0)
  if quantization is Quantization.INT8:
    np.testing.assert_allclose(outputs, want, atol=0.05 * np.abs(want).max())
    assert np.mean(outputs.argmax(-1) == want.argmax(-1)) >= 0.95
  else:  # dynamic_int8 keeps tensors under 1024 weights (all here) float
    np.testing.assert_allclose(outputs, want, atol=1e-5)


@pytest.mark.parametrize('mode, atol', [(packed.PackMode.WEIGHT_ONLY, 1e-5),
                                        (packed.PackMode.DYNAMIC, 0.05)])
def test_token_model_packs(token_ids, mode, atol):
  ids, data = token_ids
  model = token_model()
  ternary = constraints.Quantize('ternary', axis=-1)
  project_kernels(model, {'c1': ternary, 'fc': ternary})
  result = packed.pack(tflite_export.convert(model), mode)
  assert sorted(result.bits.values()) == [2, 4]  # fc INT2, conv INT4
  # The embedding table, not quantized, stays float, and is named so.
  assert len(result.float_kernels) == 1 and 'emb' in result.float_kernels[0]
  note = tflite_export.report.left_float_note(
      {'packed_weight_only': {'float_kernels': result.float_kernels}})
  assert note.endswith(f'skips): {result.float_kernels[0]}')
  assert tflite_export.report.left_float_note({'packed_weight_only': {
      'float_kernels': []}}) == ''
  outputs, _, _ = tflite_export.predict(result.content, data)
  want = model.predict(ids, verbose=0)
  np.testing.assert_allclose(outputs, want, atol=atol * np.abs(want).max())


def _run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'tflite_export', *args],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


@pytest.mark.slow
def test_command_line_converts_a_saved_model(tmp_path, pruned_lenet5):
  model, _ = pruned_lenet5
  model.save(tmp_path / 'pruned.keras')
  result = _run_cli(f'--model={tmp_path / "pruned.keras"}',
                    f'--output_dir={tmp_path / "out"}',
                    '--quantizations=float32,int8', '--micro')
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((tmp_path / 'out' / 'tflite_report.json').read_text())
  assert sorted(report) == ['dense', 'float32', 'float32_sparse', 'int8',
                            'int8_sparse', 'micro']
  assert (tmp_path / 'out' / 'micro.tflite').stat().st_size == (
      report['micro']['flash_bytes'])
  assert report['micro']['outputs_equal']
  assert abs(report['micro']['accuracy'] - report['int8']['accuracy']) < 0.01
  assert 'TFLite Micro file:' in result.stdout
  assert (tmp_path / 'out' / 'int8_sparse.tflite').stat().st_size == (
      report['int8_sparse']['bytes'])
  assert '| int8_sparse |' in result.stdout
  # Pruned but not quantized: no kernel on a grid to pack.
  assert 'No packed INT2/INT4/INT8 variant' in result.stdout


@pytest.mark.slow
def test_command_line_packs_and_names_the_kernels_left_float(tmp_path):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((28, 28, 1)),
      keras.layers.DepthwiseConv2D(3, name='depthwise'),
      keras.layers.Flatten(),
      keras.layers.Dense(10, name='out'),
  ])
  project_kernels(model, {'out': constraints.Quantize('ternary', axis=-1)})
  model.save(tmp_path / 'quantized.keras')
  result = _run_cli(f'--model={tmp_path / "quantized.keras"}',
                    f'--output_dir={tmp_path / "out"}',
                    '--quantizations=float32')
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((tmp_path / 'out' / 'tflite_report.json').read_text())
  for variant in ('packed_weight_only', 'packed_dynamic'):
    # Named by the model's weights, not the converter's tensor names.
    assert report[variant]['packed_bits'] == {'out/kernel': 2}
    assert report[variant]['float_kernels'] == ['depthwise/depthwise_kernel']
  assert 'The packed files keep these kernels float32' in result.stdout


def test_command_line_rejects_a_missing_model(tmp_path):
  result = _run_cli(f'--model={tmp_path / "nothing.keras"}')
  assert result.returncode != 0
  assert 'No saved model at' in result.stderr.strip().splitlines()[-1]


def test_command_line_help_lists_the_dataset_flags():
  result = _run_cli('--help')
  assert result.returncode == 1, result.stderr[-2000:]  # absl's --help exit
  for flag in ('--model', '--dataset', '--manual_dir', '--tfds_data_dir'):
    assert flag in result.stdout


def _flat_classifier(input_shape, classes):
  return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                           keras.layers.Dense(classes)])


@pytest.mark.parametrize('model, message', [
    (lambda: _flat_classifier((28, 28, 1), 3),
     "Dataset 'mnist' has 10 classes; this model has 3 outputs. Choose the "
     'dataset it was trained on.'),
    (token_model, 'The model takes int32 inputs, not float images'),
], ids=['labels', 'tokens'])
def test_command_line_refuses_a_model_the_dataset_cannot_score(
    tmp_path, model, message):
  model().save(tmp_path / 'model.keras')
  result = _run_cli(f'--model={tmp_path / "model.keras"}', '--dataset=mnist',
                    f'--output_dir={tmp_path / "out"}')
  assert result.returncode != 0
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith('tflite_export: error: ' + message)
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'out').exists()  # refused before any conversion


@pytest.mark.parametrize('any_keras', [keras, tf_admm.keras_compat.keras3],
                         ids=['keras2', 'keras3'])
def test_a_recurrent_model_converts_to_builtin_ops_at_batch_one(any_keras):
  any_keras.utils.set_random_seed(0)
  model = any_keras.Sequential([
      any_keras.Input((10,), dtype='int32'),
      any_keras.layers.Embedding(50, 8), any_keras.layers.LSTM(16),
      any_keras.layers.Dense(3)])
  ids = np.random.default_rng(0).integers(0, 50, (40, 10)).astype(np.int32)
  content = tflite_export.convert(model)
  outputs, _, _ = tflite_export.predict(
      content, tf.data.Dataset.from_tensor_slices((ids, np.zeros(40))))
  want = model.predict(ids, verbose=0)
  np.testing.assert_allclose(outputs, want, atol=1e-5)


def test_int8_without_calibration_data_is_refused_not_left_float():
  model = _flat_classifier((28, 28, 1), 10)
  with pytest.raises(ValueError, match='needs representative_data'):
    tflite_export.convert(model, Quantization.INT8,
                          representative_data=tf.data.Dataset.range(0))
  # Of unknown length and empty: the converter falls back to float32
  # without an error of its own; the file's kernel types are checked.
  empty = tf.data.Dataset.from_generator(
      lambda: iter(()), output_signature=tf.TensorSpec((28, 28, 1)))
  with pytest.raises(ValueError, match='The int8 conversion left kernels in '
                     'float32'):
    tflite_export.convert(model, Quantization.INT8, representative_data=empty)


# Calls the export's main() once per flag list, in one process, and prints
# how each ended.
_EXPORT_REFUSALS = """
import json, sys
from absl import app, flags
from tflite_export import __main__ as export
ends = []
for flag_list in json.loads(sys.argv[1]):
  flags.FLAGS(['tflite_export'] + flag_list)
  try:
    export.main(['tflite_export'])
    ends.append(None)
  except SystemExit as refusal:
    ends.append(str(refusal.code))
  except app.UsageError as refusal:
    ends.append(f'usage: {refusal}')
  flags.FLAGS.unparse_flags()
print(json.dumps(ends))
"""


def test_command_line_refuses_hostile_or_wrong_input_before_converting(
    tmp_path):
  marker = tmp_path / 'marker'
  payload = keras.layers.Lambda(eval(  # pylint: disable=eval-used
      f'lambda x: (open({str(marker)!r}, "w").close(), x)[1]'),
                                name='payload')
  hostile = keras.Sequential([keras.Input((28, 28, 1)), payload,
                              keras.layers.Flatten(), keras.layers.Dense(10)])
  hostile.save(tmp_path / 'hostile.h5')
  hostile.save(tmp_path / 'hostile_savedmodel', save_format='tf')
  marker.unlink()
  model = tmp_path / 'model.keras'
  _flat_classifier((28, 28, 1), 10).save(model)
  (tmp_path / 'truncated.keras').write_bytes(model.read_bytes()[:300])
  (tmp_path / 'notes.txt').write_text('not a model')
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'a_run').mkdir()
  (tmp_path / 'a_run' / 'run.json').write_text('{}')
  (tmp_path / 'mine').mkdir()
  (tmp_path / 'mine' / 'int8.tflite').write_bytes(b'my own file')
  out = f'--output_dir={tmp_path / "out"}'
  cases = [
      ([f'--model={tmp_path / "hostile.h5"}', out],
       "layer 'payload' holds Python code"),
      ([f'--model={tmp_path / "hostile_savedmodel"}', out],
       "layer 'payload' holds Python code"),
      ([f'--model={model}', out, '--quantizations=int8',
        '--calibration_examples=0'],
       'usage: --quantizations=int8 and --micro calibrate on '
       '--calibration_examples'),
      ([f'--model={model}', f'--output_dir={tmp_path / "mine"}'],
       'holds files no export wrote (int8.tflite)'),
      ([f'--model={model}', f'--output_dir={tmp_path / "notes.txt"}'],
       'is a file; give a folder'),
      ([f'--model={tmp_path / "truncated.keras"}', out],
       'is not a saved Keras model'),
      ([f'--model={tmp_path / "notes.txt"}', out],
       'is not a saved Keras model'),
      ([f'--model={tmp_path / "empty"}', out],
       'is not a SavedModel tf_keras wrote'),
      ([f'--model={tmp_path / "a_run"}', out], 'is a run folder'),
  ]
  result = subprocess.run(
      [sys.executable, '-c', _EXPORT_REFUSALS,
       json.dumps([flag_list for flag_list, _ in cases])],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 0, result.stderr[-3000:]
  ends = json.loads(result.stdout.strip().splitlines()[-1])
  for (flag_list, message), end in zip(cases, ends):
    assert end and message in end, (flag_list, end)
    assert end.startswith(('tflite_export: error: ', 'usage: ')), end
  assert not marker.exists()
  assert not (tmp_path / 'out').exists()
  assert (tmp_path / 'mine' / 'int8.tflite').read_bytes() == b'my own file'
