"""TFLite Micro export: full int8 in the TFLM interpreter, LUT-compressed
kernels, exact levels, the arena, and refusals."""

import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import interpreter as litert
from ai_edge_litert.tools import flatbuffer_utils
from tflite_micro import runtime as micro_runtime

from tests.conftest import project_kernels
from tf_admm import constraints
from tf_admm.keras_compat import keras
from tflite_export import converter
from tflite_export import evaluate
from tflite_export import micro
from tflite_export import packed
from tflite_export import tflm


def _levelled_model(bits=3, seed=0):
  """A small CNN whose conv and fc1 kernels lie on uniform levels (codes
  ±1..±2^(bits-1) times one scale per output channel), the output layer
  on none."""
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((10, 10, 1)),
      keras.layers.Conv2D(8, 3, activation='relu', name='conv'),
      keras.layers.MaxPooling2D(name='pool'),
      keras.layers.Flatten(name='flatten'),
      keras.layers.Dense(32, activation='relu', name='fc1'),
      keras.layers.Dense(4, name='out'),
  ])
  levels = constraints.Quantize('uniform', bits=bits, axis=-1)
  project_kernels(model, {'conv': levels, 'fc1': levels})
  return model


def _images(n=64, seed=0):
  return np.random.default_rng(seed).uniform(
      size=(n, 10, 10, 1)).astype(np.float32)


def _calibration():
  return tf.data.Dataset.from_tensor_slices(_images(100, seed=1))


def _int8_file(model):
  """(snapped int8 content, {kernel: exact}) of `model`, as
  `export_micro` makes them."""
  return micro.snap_levels(
      micro.convert_int8(model, _calibration()),
      packed.float_kernels_by_name(converter.convert(model)))


@pytest.fixture(scope='module')
def int8_file():
  """(snapped int8 content, {kernel: exact}) of the levelled model."""
  return _int8_file(_levelled_model())


def _kernel_arrays(content):
  """{kernel tensor name: (int8 codes, per-channel scales)}."""
  model = flatbuffer_utils.convert_bytearray_to_object(content)
  tensors = model.subgraphs[0].tensors
  found = {}
  for index, _, _ in micro._kernels(model):  # pylint: disable=protected-access
    tensor = tensors[index]
    codes = np.frombuffer(bytes(model.buffers[tensor.buffer].data),
                          np.int8).reshape(tensor.shape)
    found[tensor.name.decode()] = (codes,
                                   np.asarray(tensor.quantization.scale))
  return found


def _name_of(content, layer):
  return next(name for name in _kernel_arrays(content) if layer in name)


def test_int8_file_has_int8_inputs_and_outputs(int8_file):
  interpreter = micro_runtime.Interpreter.from_bytes(int8_file[0],
                                                     arena_size=100_000)
  assert interpreter.get_input_details(0)['dtype'] == np.int8
  assert interpreter.get_output_details(0)['dtype'] == np.int8


def test_integer_io_needs_full_int8():
  with pytest.raises(ValueError, match='needs Quantization.INT8'):
    converter.convert(_levelled_model(), converter.Quantization.DYNAMIC_INT8,
                      integer_io=True)


def test_float_ops_are_refused_naming_the_op():
  float_content = converter.convert(_levelled_model())
  with pytest.raises(ValueError, match=r'op 0 \(CONV_2D\) has float tensor'):
    micro.check_ops(float_content)


def test_snapped_levels_are_exact_multiples_of_the_layers_levels(int8_file):
  content, exact = int8_file
  model = _levelled_model()
  assert exact == {_name_of(content, 'conv'): True,
                   _name_of(content, 'fc1'): True,
                   _name_of(content, 'out'): False}
  for layer in ('conv', 'fc1'):
    codes, scales = _kernel_arrays(content)[_name_of(content, layer)]
    kernel = model.get_layer(layer).get_weights()[0]
    # The file's kernel is [out, ...] with one scale per output channel;
    # dequantized, it is the Keras kernel (levels j * q) to float32 error.
    values = np.moveaxis(kernel, -1, 0).reshape(len(scales), -1)
    rows = codes.reshape(len(scales), -1).astype(np.int64)
    np.testing.assert_allclose(rows * scales[:, None], values, rtol=1e-6,
                               atol=1e-7)
    for row, channel in zip(rows, values):
      # Channel levels j * q with k * q the largest (3-bit: k <= 4): the
      # codes are j * (127 // k), their largest k * (127 // k).
      q = np.abs(channel[channel != 0]).min()
      k = int(round(np.abs(channel).max() / q))
      if np.allclose(channel / q, np.round(channel / q), atol=1e-4):
        assert np.abs(row).max() == k * (127 // k)
        np.testing.assert_array_equal(row, np.round(channel / q) * (127 // k))


def test_channels_off_any_grid_are_left_as_converted():
  model = _levelled_model()
  kernel, bias = model.get_layer('fc1').get_weights()
  # Two magnitudes a channel, 0.3 and 0.5 of the largest: no grid c * s
  # holds them with the gap (0.2) as its step, so the kernel stays.
  kernel = np.where(np.arange(kernel.shape[0])[:, None] % 2 == 0,
                    0.3, 0.5) * np.sign(kernel)
  model.get_layer('fc1').set_weights([kernel.astype(np.float32), bias])
  unsnapped = micro.convert_int8(model, _calibration())
  content, exact = _int8_file(model)
  name = _name_of(content, 'fc1')
  assert not exact[name]
  np.testing.assert_array_equal(_kernel_arrays(content)[name][0],
                                _kernel_arrays(unsnapped)[name][0])


def test_snapping_keeps_the_models_outputs(int8_file):
  model = _levelled_model()
  unsnapped = micro.convert_int8(model, _calibration())
  x = _images()
  before = tflm.predict(unsnapped, x).astype(np.int32)
  after = tflm.predict(int8_file[0], x).astype(np.int32)
  # Snapping moves codes by at most half a code and requantizes biases;
  # through two layers the int8 outputs (codes up to ±127) move by a few
  # codes at most, and by under one on average.
  assert np.abs(before - after).max() <= 4
  assert np.abs(before - after).mean() < 1


def test_lut_bytes_against_a_hand_count():
  # Two channels of 6 weights: the first holds 4 values, the second 3.
  array = np.array([[-2, -1, 1, 2, 2, 1], [5, 5, 0, -5, 0, 5]], np.int8)
  # One table per channel: stride 4, 2-bit indices.
  assert micro.lut_bytes(array, 0) == (2, math.ceil(12 * 2 / 8) + 16 + 2 * 4)
  # One table: the 7 values {-5, -2, -1, 0, 1, 2, 5}, 3-bit indices.
  assert micro.lut_bytes(array, None) == (3, math.ceil(12 * 3 / 8) + 16 + 7)


def test_plan_follows_quantization_and_leaves_growing_kernels(int8_file):
  content, _ = int8_file
  plan = {choice.name: choice for choice in micro.lut_plan(content)}
  arrays = _kernel_arrays(content)
  conv, fc1, out = (plan[_name_of(content, layer)]
                    for layer in ('conv', 'fc1', 'out'))
  # fc1: 32 x 784 codes on 8 levels a channel: 3-bit indices, per channel.
  assert (fc1.bits, fc1.axis) == (3, 0)
  assert fc1.lut_bytes == micro.lut_bytes(arrays[fc1.name][0], 0)[1]
  assert fc1.lut_bytes < fc1.int8_bytes
  # conv: 72 codes; tables and a DECODE op would outweigh them.
  assert (conv.bits, conv.lut_bytes) == (0, conv.int8_bytes)
  # out: not on levels; its 128 codes would need more than they save.
  assert out.bits == 0


def test_compressed_file_runs_in_tflm_equal_to_the_int8_file(int8_file):
  content, _ = int8_file
  compressed = micro.compress(content, micro.lut_plan(content))
  assert len(compressed) < len(content)
  x = _images()
  np.testing.assert_array_equal(tflm.predict(compressed, x),
                                tflm.predict(content, x))


def test_no_compressible_kernel_leaves_the_file_as_it_is():
  model = _levelled_model()
  # fc1 off its levels: no kernel holds few values any more.
  kernel, bias = model.get_layer('fc1').get_weights()
  noise = np.random.default_rng(0).normal(size=kernel.shape)
  model.get_layer('fc1').set_weights(
      [(kernel + 0.01 * noise).astype(np.float32), bias])
  content = micro.convert_int8(model, _calibration())
  plan = micro.lut_plan(content)
  assert len(plan) == 3 and all(c.bits == 0 for c in plan)
  assert micro.compress(content, plan) == content


def test_interpreter_errors_name_the_problem():
  with pytest.raises(ValueError, match='TFLM interpreter cannot run'):
    tflm.arena_bytes(b'not a model at all, just bytes' * 10)


def test_without_tflite_micro_the_error_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tflite_micro', None)
  with pytest.raises(ValueError, match='pip install tflite-micro'):
    tflm.check_available()


# Runs a .tflite file once in TFLM in an arena of the given size; prints
# "ran" only if it allocated and ran (too small an arena may crash it).
_RUN_IN_ARENA = """
import sys
import numpy as np
from tflite_micro import runtime
with open(sys.argv[1], 'rb') as f:
  interpreter = runtime.Interpreter.from_bytes(f.read(),
                                               arena_size=int(sys.argv[2]))
details = interpreter.get_input_details(0)
interpreter.set_input(np.zeros(details['shape'], details['dtype']), 0)
interpreter.invoke()
print('ran')
"""


def _runs_in(path, arena_size):
  result = subprocess.run([sys.executable, '-c', _RUN_IN_ARENA, str(path),
                           str(arena_size)], capture_output=True, text=True,
                          timeout=120)
  return result.stdout.strip() == 'ran'


def test_arena_is_the_smallest_the_interpreter_runs_in(int8_file, tmp_path):
  content = micro.compress(int8_file[0], micro.lut_plan(int8_file[0]))
  path = tmp_path / 'micro.tflite'
  path.write_bytes(content)
  arena = tflm.arena_bytes(content)
  # TFLM aligns the arena's start to 16 bytes: give it that much slack.
  assert _runs_in(path, arena + 16)
  assert not _runs_in(path, arena - 16)


def test_tflm_agrees_with_litert_reference_kernels(int8_file):
  content = int8_file[0]
  x = _images()
  labels = np.zeros(len(x), np.int64)
  litert, _, runtime = evaluate.predict(
      content, tf.data.Dataset.from_tensor_slices((x, labels)),
      runtime='builtin')
  assert runtime == 'builtin'
  micro_outputs = tflm.predict(content, x).astype(np.int32)
  # Both run reference int8 arithmetic; rounding may differ by one code.
  assert np.abs(micro_outputs - litert.astype(np.int32)).max() <= 1
  assert np.mean(micro_outputs.argmax(-1) == litert.argmax(-1)) >= 0.95


def test_export_micro_reports_and_writes(tmp_path):
  model = _levelled_model()
  x = _images(200)
  y = np.argmax(model.predict(x, verbose=0), -1)
  report = micro.export_micro(model, x, y, _calibration(), str(tmp_path))
  stored = (tmp_path / 'micro.tflite').read_bytes()
  assert report['flash_bytes'] == len(stored)
  assert report['int8_bytes'] == len((tmp_path / 'micro_int8.tflite')
                                     .read_bytes())
  assert report['flash_bytes'] < report['int8_bytes']
  assert report['outputs_equal'] and report['compressed']
  assert report['arena_bytes'] == tflm.arena_bytes(stored)
  assert sorted(report['lut_bits'].values()) == [0, 0, 3]
  assert list(report['lut_axis'].values()) == ['per_channel']
  # Labels are the Keras model's own predictions: int8 keeps most.
  assert report['accuracy'] >= 0.9
  assert abs(report['accuracy'] - report['int8_accuracy_litert']) <= 0.02
  # The scales a device quantizes inputs with and reads outputs by, as
  # LiteRT reads them from the file before compression (LiteRT has no
  # DECODE op).
  interpreter = litert.Interpreter(
      model_content=(tmp_path / 'micro_int8.tflite').read_bytes())
  for side, details in (('input', interpreter.get_input_details()[0]),
                        ('output', interpreter.get_output_details()[0])):
    scale, zero_point = details['quantization']
    assert report['io_quantization'][side] == {
        'scale': pytest.approx(scale), 'zero_point': zero_point}
  # Names are stripped from the stored file: TFLM reads none.
  assert b'fc1' not in stored
  assert 'TFLM interpreter' in micro.summary_line(report)
