"""Packed INT2/INT4/INT8 .tflite files from quantized Keras models."""

import gzip

import numpy as np
import pytest

from tests.conftest import project_kernels
from tf_admm import constraints
from tf_admm.keras_compat import keras
from tflite_export import converter
from tflite_export import evaluate
from tflite_export import packed


def quantized_model(fc_levels='ternary', seed=0, keras=keras):  # pylint: disable=redefined-outer-name
  """A small CNN of the Keras `keras` (Keras 2 by default) whose kernels
  were projected onto per-channel levels: the conv and first dense kernel
  `fc_levels`, the output layer 3-bit uniform, about 80% of each kernel
  pruned."""
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((8, 8, 1)),
      keras.layers.Conv2D(6, 3, activation='relu', name='conv'),
      keras.layers.Flatten(),
      keras.layers.Dense(16, activation='relu', name='fc'),
      keras.layers.Dense(4, name='out'),
  ])
  levels = {'conv': constraints.Quantize(fc_levels, axis=-1),
            'fc': constraints.Quantize(fc_levels, axis=-1),
            'out': constraints.Quantize('uniform', bits=3, axis=-1)}
  rng = np.random.default_rng(seed)
  for name, constraint in levels.items():
    layer = model.get_layer(name)
    kernel, bias = layer.get_weights()
    allowed = rng.random(kernel.shape) < 0.2
    layer.set_weights([constraint.project(kernel, allowed).values,
                       rng.normal(size=bias.shape).astype(np.float32) * 0.1])
  return model


def layer_of(float_content, model):
  """{tensor name in `float_content`: the name of `model`'s layer whose
  kernel it is}: the converter names tensors its own way, version by
  version."""
  return {name: path.split('/')[0] for name, path in
          packed.weight_paths(float_content, model).items()}


def tflite_layout(kernel):
  """Keras kernel -> TFLite's (output channels first)."""
  return np.moveaxis(kernel, -1, 0) if kernel.ndim == 4 else kernel.T


@pytest.fixture(scope='module')
def ternary():
  model = quantized_model()
  return model, converter.convert(model)


@pytest.mark.parametrize('mode', list(packed.PackMode))
def test_ternary_model_packs_into_int2_and_int4_exactly(ternary, mode):
  model, float_content = ternary
  result = packed.pack(float_content, mode)
  tensors = packed.packed_tensors(result.content)
  layers = layer_of(float_content, model)
  by_layer = {layers[name]: value for name, value in tensors.items()}
  # Ternary dense: INT2; ternary conv: INT4 (no INT2 conv kernel); 3-bit: INT4.
  assert {name: bits for name, (bits, _, _) in by_layer.items()} == {
      'conv': 4, 'fc': 2, 'out': 4}
  assert sorted(result.bits.values()) == [2, 4, 4]
  for name, (bits, codes, dequantized) in by_layer.items():
    kernel = tflite_layout(model.get_layer(name).get_weights()[0])
    np.testing.assert_allclose(dequantized, kernel, rtol=1e-6, atol=1e-7,
                               err_msg=name)
    assert np.abs(codes).max() <= (1 if bits == 2 else 7)
    np.testing.assert_array_equal(codes == 0, kernel == 0)
  assert len(result.content) < len(float_content) / 4


@pytest.mark.parametrize('mode, atol', [(packed.PackMode.WEIGHT_ONLY, 1e-5),
                                        (packed.PackMode.DYNAMIC, 0.05)])
def test_litert_outputs_match_keras(ternary, mode, atol):
  model, float_content = ternary
  content = packed.pack(float_content, mode).content
  x = np.random.default_rng(1).normal(size=(32, 8, 8, 1)).astype(np.float32)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = tf.data.Dataset.from_tensor_slices((x, np.zeros(32, np.int64)))
  outputs, _, _ = evaluate.predict(content, data, batch_size=32)
  want = model(x).numpy()
  np.testing.assert_allclose(outputs, want, atol=atol * np.abs(want).max())


def test_binary_dense_packs_into_int2():
  model = quantized_model('binary', seed=2)
  float_content = converter.convert(model)
  result = packed.pack(float_content)
  layers = layer_of(float_content, model)
  bits = {layers[name]: b for name, b in result.bits.items()}
  assert bits == {'conv': 4, 'fc': 2, 'out': 4}


@pytest.mark.parametrize('mode, atol', [(packed.PackMode.WEIGHT_ONLY, 1e-5),
                                        (packed.PackMode.DYNAMIC, 0.05)])
def test_uniform_levels_of_4_to_7_bits_pack_into_int8_exactly(mode, atol):
  # k-bit uniform codes reach ±2^(k-1): ±8 at 4 bits is beyond INT4's ±7.
  keras.utils.set_random_seed(4)
  model = keras.Sequential([
      keras.Input((8, 8, 4)),
      keras.layers.Conv2D(3, 3, name='conv'),
      keras.layers.Flatten(),
      keras.layers.Dense(4, name='out'),
  ])
  project_kernels(model, {
      'conv': constraints.Quantize('uniform', bits=4, axis=-1),
      'out': constraints.Quantize('uniform', bits=5, axis=-1)})
  float_content = converter.convert(model)
  result = packed.pack(float_content, mode)
  tensors = packed.packed_tensors(result.content)
  assert sorted(bits for bits, _, _ in tensors.values()) == [8, 8]
  assert result.float_kernels == []
  layers = layer_of(float_content, model)
  for name, (_, codes, dequantized) in tensors.items():
    kernel = tflite_layout(model.get_layer(layers[name]).get_weights()[0])
    np.testing.assert_allclose(dequantized, kernel, rtol=1e-6, atol=1e-7)
    assert 7 < np.abs(codes).max() <= 16
  x = np.random.default_rng(5).normal(size=(8, 8, 8, 4)).astype(np.float32)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = tf.data.Dataset.from_tensor_slices((x, np.zeros(8, np.int64)))
  outputs, _, _ = evaluate.predict(result.content, data, batch_size=8)
  want = model(x).numpy()
  np.testing.assert_allclose(outputs, want, atol=atol * np.abs(want).max())


def test_kernels_left_float_are_named():
  # A depthwise kernel (no packed op) and one off every grid stay float.
  keras.utils.set_random_seed(5)
  model = keras.Sequential([
      keras.Input((8, 8, 2)),
      keras.layers.DepthwiseConv2D(3, name='depthwise'),
      keras.layers.Flatten(),
      keras.layers.Dense(6, name='fc'),
      keras.layers.Dense(4, name='out'),
  ])
  ternary = constraints.Quantize('ternary', axis=-1)
  project_kernels(model, {'depthwise': ternary, 'out': ternary})
  float_content = converter.convert(model)
  result = packed.pack(float_content)
  layers = layer_of(float_content, model)
  assert [layers[name] for name in result.bits] == ['out']
  assert sorted(layers[name] for name in result.float_kernels) == [
      'depthwise', 'fc']


def test_packed_file_is_smaller_under_gzip_too(ternary):
  _, float_content = ternary
  content = packed.pack(float_content).content
  assert len(gzip.compress(content)) < len(gzip.compress(float_content))


def test_kernels_off_the_grid_are_left_float_or_refused():
  keras.utils.set_random_seed(3)
  model = keras.Sequential([keras.Input((6,)),
                            keras.layers.Dense(4, name='dense')])
  with pytest.raises(ValueError, match='Quantize'):
    packed.pack(converter.convert(model))
  kernel = model.get_layer('dense').get_weights()[0]
  assert packed.grid_codes(tflite_layout(kernel)) is None


@pytest.mark.parametrize('values, codes', [
    ([0.0, 0.3, -0.6, 0.9], [0, 1, -2, 3]),
    ([0.0, 0.0, 0.0, 0.0], [0, 0, 0, 0]),  # an all-zero channel
    ([0.2, -0.2, 0.2, 0.2], [1, -1, 1, 1]),  # binary
    ([0.4, 0.0, 1.0, -0.6], [2, 0, 5, -3]),  # gaps 0.4 and 0.2: s = 0.2
])
def test_grid_codes_match_the_smallest_gap(values, codes):
  got = packed.grid_codes(np.array([values], np.float32))
  np.testing.assert_array_equal(got, [codes])
