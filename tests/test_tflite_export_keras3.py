"""TFLite export of Keras 3 models through Keras 3's own LiteRT export.

The Keras 2 counterparts are in test_tflite_export.py and test_packed.py;
these mirror their checks and tolerances on Keras 3 (`import keras`) models.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema
from litert_quantizer.utils import tfl_flatbuffer_utils

import tf_admm
import tflite_export
from tf_admm import constraints
from tf_admm import keras_compat
from tf_admm.keras_compat import keras3
from tflite_export import Quantization
from tflite_export import __main__ as cli
from tflite_export import packed
from tflite_export import report

from tests import conftest
from tests import test_packed


def image_model(seed=0):
  """A built Keras 3 CNN on 8x8x1 images with 4 classes. Its 'fc' kernel
  (288 x 16) is over the 1024 weights that dynamic_int8 quantizes."""
  keras3.utils.set_random_seed(seed)
  return keras3.Sequential([
      keras3.Input((8, 8, 1)),
      keras3.layers.Conv2D(8, 3, activation='relu', name='conv'),
      keras3.layers.Flatten(name='flatten'),
      keras3.layers.Dense(16, activation='relu', name='fc'),
      keras3.layers.Dense(4, name='out'),
  ])


def token_model(seed=0):
  return conftest.token_model(seed, keras=keras3)


def images(n=200, seed=1):
  return np.random.default_rng(seed).normal(size=(n, 8, 8, 1)).astype(
      np.float32)


def token_ids(n=200, seed=0):
  return np.random.default_rng(seed).integers(0, 50, size=(n, 10))


MODELS = {'image': (image_model, images), 'token': (token_model, token_ids)}


def tflite_layout(kernel):
  """Keras kernel -> TFLite's (output channels first)."""
  return np.moveaxis(kernel, -1, 0) if kernel.ndim == 4 else kernel.T


def operators(content):
  """The builtin operator codes of a .tflite file, and its custom op names
  (Flex ops are custom ops named 'Flex...')."""
  model = tfl_flatbuffer_utils.read_model(content)
  codes = [code.builtinCode for code in model.operatorCodes]
  custom = [code.customCode for code in model.operatorCodes
            if code.builtinCode == schema.BuiltinOperator.CUSTOM]
  return codes, custom


def weight_tensor_types(content) -> dict:
  """{shape: tensor type} of the constant tensors of a .tflite file."""
  model = tfl_flatbuffer_utils.read_model(content)
  return {tuple(tensor.shape): tensor.type
          for subgraph in model.subgraphs for tensor in subgraph.tensors
          if model.buffers[tensor.buffer].data is not None}


def assert_builtin_ops_only(content):
  codes, custom = operators(content)
  assert not custom, f'custom (Flex) ops in the file: {custom}'
  assert schema.BuiltinOperator.CUSTOM not in codes


@pytest.mark.parametrize('sparse', [False, True])
@pytest.mark.parametrize('quantization', list(Quantization))
@pytest.mark.parametrize('kind', sorted(MODELS))
def test_litert_outputs_match_keras_in_every_variant(kind, quantization,
                                                     sparse):
  make_model, make_inputs = MODELS[kind]
  model, x = make_model(), make_inputs()
  # Calibration and inference cast token ids to the int32 input, unscaled.
  content = tflite_export.convert(
      model, quantization, sparse,
      representative_data=tf.data.Dataset.from_tensor_slices(x).batch(20))
  assert_builtin_ops_only(content)
  data = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x))))
  outputs, _, _ = tflite_export.predict(content, data)
  want = model.predict(x, verbose=0)
  if kind == 'image':  # its fc kernel is int8 in every quantized variant
    assert weight_tensor_types(content)[(16, 288)] == (
        schema.TensorType.FLOAT32 if quantization is Quantization.FLOAT32
        else schema.TensorType.INT8)
  # dynamic_int8 keeps tensors under 1024 weights (all the token model's)
  # float.
  if quantization is Quantization.FLOAT32 or (
      kind == 'token' and quantization is Quantization.DYNAMIC_INT8):
    np.testing.assert_allclose(outputs, want, atol=1e-5)
  else:
    np.testing.assert_allclose(outputs, want, atol=0.05 * np.abs(want).max())
    assert np.mean(outputs.argmax(-1) == want.argmax(-1)) >= 0.95


@pytest.mark.parametrize('kind', sorted(MODELS))
def test_batch_dimension_is_free(kind):
  make_model, make_inputs = MODELS[kind]
  model, x = make_model(), make_inputs(300)
  content = tflite_export.convert(model)
  details = litert.Interpreter(model_content=content).get_input_details()[0]
  assert details['shape_signature'][0] == -1
  assert list(details['shape_signature'][1:]) == list(x.shape[1:])
  # Token ids stay integers in the file, as in the Keras model.
  assert details['dtype'] == (np.int32 if kind == 'token' else np.float32)
  data = tf.data.Dataset.from_tensor_slices((x, np.arange(300)))
  unbatched, labels, _ = tflite_export.predict(content, data, batch_size=128)
  batched, _, _ = tflite_export.predict(content, data.batch(7))
  np.testing.assert_array_equal(labels, np.arange(300))
  np.testing.assert_allclose(unbatched, batched, atol=1e-6)
  np.testing.assert_allclose(unbatched, model.predict(x, verbose=0),
                             atol=1e-5)


def test_int8_without_calibration_data_is_rejected():
  with pytest.raises(ValueError, match='representative_data'):
    tflite_export.convert(image_model(), Quantization.INT8)


def test_model_stripped_of_held_masks_exports_its_zeros():
  model = image_model()
  rng = np.random.default_rng(0)
  masks = {w.path: rng.random(w.shape) < 0.1
           for w in tf_admm.prunable_weights(model)}
  plain = tf_admm.strip_pruning(tf_admm.to_pruning_wrappers(model, masks))
  content = tflite_export.convert(plain, sparse=True)
  x = images(50)
  outputs, _, _ = tflite_export.predict(
      content, tf.data.Dataset.from_tensor_slices((x, np.zeros(50))))
  np.testing.assert_allclose(outputs, plain.predict(x, verbose=0), atol=1e-5)
  # Sparse encoding keeps the 90% zeros of the masked kernels out of the file.
  dense = tflite_export.convert(plain)
  assert len(content) < len(dense) / 2


@pytest.fixture(scope='module')
def ternary():
  model = test_packed.quantized_model(keras=keras3)
  return model, tflite_export.convert(model)


@pytest.mark.parametrize('mode, atol', [(packed.PackMode.WEIGHT_ONLY, 1e-5),
                                        (packed.PackMode.DYNAMIC, 0.05)])
def test_ternary_model_packs_into_int2_and_int4(ternary, mode, atol):
  model, float_content = ternary
  result = packed.pack(float_content, mode)
  assert_builtin_ops_only(result.content)
  # Keras 3's export names tensors after uniquified scopes ('fc_1'): match
  # each packed tensor to its layer by its (distinct) TFLite-layout shape.
  kernels = {name: tflite_layout(model.get_layer(name).get_weights()[0])
             for name in ('conv', 'fc', 'out')}
  by_shape = {value[2].shape: value
              for value in packed.packed_tensors(result.content).values()}
  assert sorted(by_shape) == sorted(k.shape for k in kernels.values())
  # Ternary dense: INT2; ternary conv: INT4 (no INT2 conv kernel); 3-bit: INT4.
  assert {name: by_shape[k.shape][0] for name, k in kernels.items()} == {
      'conv': 4, 'fc': 2, 'out': 4}
  assert sorted(result.bits.values()) == [2, 4, 4]
  for name, kernel in kernels.items():
    bits, codes, dequantized = by_shape[kernel.shape]
    np.testing.assert_allclose(dequantized, kernel, rtol=1e-6, atol=1e-7,
                               err_msg=name)
    assert np.abs(codes).max() <= (1 if bits == 2 else 7)
    np.testing.assert_array_equal(codes == 0, kernel == 0)
  # The file shrinks by about what storing those kernels in 2 or 4 bits
  # instead of 32 saves. (Not 4x smaller in all, as the Keras 2 file of
  # test_packed is: Keras 3's Flatten adds shape ops, fixed bytes.)
  saved = sum(k.size * (4 - by_shape[k.shape][0] / 8)
              for k in kernels.values())
  assert len(float_content) - len(result.content) > 0.9 * saved
  x = images(32)
  outputs, _, _ = tflite_export.predict(
      result.content, tf.data.Dataset.from_tensor_slices(
          (x, np.zeros(32, np.int64))), batch_size=32)
  want = model(x).numpy()
  np.testing.assert_allclose(outputs, want, atol=atol * np.abs(want).max())


def test_export_variants_measure_every_variant(tmp_path):
  model = image_model()
  x = images(120)
  labels = model.predict(x, verbose=0).argmax(-1)
  # Half the labels are Keras' own predictions, half shifted: accuracy 0.5.
  labels[::2] = (labels[::2] + 1) % 4
  test = tf.data.Dataset.from_tensor_slices((x, labels))
  calibration = tf.data.Dataset.from_tensor_slices(images(100, seed=2))
  # int8 only (and the float32 reference): the other variants convert the
  # same way, tested above.
  results = tflite_export.export_variants(
      model, test, calibration, quantizations=[Quantization.INT8],
      output_dir=str(tmp_path))
  assert sorted(results) == ['dense', 'int8', 'int8_sparse']
  assert results['dense']['accuracy'] == 0.5
  for name in ('int8', 'int8_sparse'):
    assert abs(results[name]['accuracy'] - 0.5) <= 0.05, name
    assert (tmp_path / f'{name}.tflite').stat().st_size == (
        results[name]['bytes'])
    # int8 weights: about 4x smaller than the float32 file.
    assert results[name]['bytes'] < results['dense']['bytes'] / 2.5
    assert results[name]['gzip_ratio'] > 2.5
  for result in results.values():
    assert result['runtime'] in ('xnnpack', 'builtin')
    assert result['bytes'] > result['gzip_bytes'] > 0


def test_export_packed_measures_the_packed_variants(ternary):
  model, float_content = ternary
  x = images(64)
  test = tf.data.Dataset.from_tensor_slices(
      (x, model.predict(x, verbose=0).argmax(-1)))
  dense_gzip = report.sizes(float_content)['gzip_bytes']
  results = report.export_packed(model, test, dense_gzip)
  assert sorted(results) == ['packed_dynamic', 'packed_weight_only']
  assert results['packed_weight_only']['accuracy'] == 1.0
  assert results['packed_dynamic']['accuracy'] >= 0.95
  for result in results.values():
    assert sorted(result['packed_bits'].values()) == [2, 4, 4]
    assert result['gzip_ratio'] > 1


def test_command_line_loads_a_keras3_model_without_its_held_masks(tmp_path):
  model = image_model()
  masks = {w.path: np.random.default_rng(0).random(w.shape) < 0.5
           for w in tf_admm.prunable_weights(model)}
  held = tf_admm.to_pruning_wrappers(model, masks)
  held.save(tmp_path / 'held.keras')
  assert keras_compat.saved_by_keras3(tmp_path / 'held.keras')
  loaded = cli.load_plain_model(str(tmp_path / 'held.keras'))
  assert isinstance(loaded, keras3.Model)
  assert not tf_admm.masks_of(loaded)
  for layer in loaded.layers:
    assert getattr(layer, 'kernel_regularizer', None) is None, layer.name
  x = images(20)
  np.testing.assert_allclose(loaded.predict(x, verbose=0),
                             held.predict(x, verbose=0), atol=1e-6)


def test_command_line_tells_keras2_files_apart(tmp_path):
  conftest.token_model().save(tmp_path / 'keras2.keras')
  assert not keras_compat.saved_by_keras3(tmp_path / 'keras2.keras')
  assert not keras_compat.saved_by_keras3(tmp_path)  # a SavedModel folder
  assert not isinstance(cli.load_plain_model(str(tmp_path / 'keras2.keras')),
                        keras3.Model)


def _run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'tflite_export', *args],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def test_command_line_refuses_a_keras3_token_model(tmp_path):
  token_model().save(tmp_path / 'model.keras')
  result = _run_cli(f'--model={tmp_path / "model.keras"}', '--dataset=mnist',
                    f'--output_dir={tmp_path / "out"}')
  assert result.returncode != 0
  last_line = result.stderr.strip().splitlines()[-1]
  # Loaded by Keras 3 and its 'int32' dtype name read as a dtype.
  assert last_line.startswith('tflite_export: error: The model takes int32 '
                              'inputs, not float images'), result.stderr[-2000:]
  assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_command_line_converts_and_packs_a_keras3_model(tmp_path):
  """The whole command on MNIST's test split, with a ternary Keras 3 model
  (untrained: the accuracies are only compared with each other)."""
  keras3.utils.set_random_seed(0)
  model = keras3.Sequential([
      keras3.Input((28, 28, 1)),
      keras3.layers.Conv2D(4, 5, strides=2, activation='relu', name='conv'),
      keras3.layers.Flatten(),
      keras3.layers.Dense(10, name='fc'),
  ])
  for name in ('conv', 'fc'):
    layer = model.get_layer(name)
    kernel, bias = layer.get_weights()
    layer.set_weights([constraints.Quantize('ternary', axis=-1).project(
        kernel, np.ones(kernel.shape, bool)).values, bias])
  model.save(tmp_path / 'ternary.keras')
  result = _run_cli(f'--model={tmp_path / "ternary.keras"}',
                    f'--output_dir={tmp_path / "out"}',
                    '--quantizations=float32')
  assert result.returncode == 0, result.stderr[-2000:]
  report_json = json.loads(
      (tmp_path / 'out' / 'tflite_report.json').read_text())
  assert sorted(report_json) == ['dense', 'float32', 'float32_sparse',
                                 'packed_dynamic', 'packed_weight_only']
  for name in ('float32', 'float32_sparse', 'packed_weight_only'):
    assert report_json[name]['accuracy'] == report_json['dense']['accuracy']
  # Keras 3's export names tensors arith.constantN: the report names the
  # model's weights.
  assert sorted(report_json['packed_weight_only']['packed_bits'].items()) == [
      ('conv/kernel', 4), ('fc/kernel', 2)]
  assert (tmp_path / 'out' / 'packed_weight_only.tflite').stat().st_size == (
      report_json['packed_weight_only']['bytes'])
  assert '| packed_weight_only |' in result.stdout
