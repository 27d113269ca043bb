"""TensorFlow Lite for Microcontrollers (TFLM) files, sized as a device
stores them and checked in the TFLM interpreter (the `tflite-micro`
package).

TFLM runs full-integer int8 models; its own weight compression stores a
kernel holding few distinct values as k-bit indices into per-channel (or
per-tensor) tables, decoded at run time by DECODE operators: the form ADMM
quantization leaves (a few levels per channel, 0 among them where pruned).

  1. `convert_int8`: full int8 with int8 inputs and outputs; a model with an
     op TFLM would run in float is refused, naming the op.
  2. `snap_levels`: the converter's int8 grid (max |w| -> 127) rounds levels
     k*q to uneven codes; each channel whose codes are a rounded grid of at
     most `MAX_MULTIPLE` multiples is rescaled so its levels are exact
     multiples of one int8 step (its bias requantized to match).
  3. `lut_plan`: per kernel, index bits for the values of each channel (or
     of the tensor, for a kernel with one scale); a kernel whose
     compression would not shrink the stored file is left int8.
  4. `export_micro`: compresses, strips the names TFLM does not read,
     measures the arena the interpreter needs, and scores the test set in
     TFLM against the uncompressed file.
"""

import contextlib
import dataclasses
import math
import os
import re
import sys
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils
from tflite_micro import compression
from tflite_micro import runtime as micro_runtime
# The spec's dataclasses: `compression.parse_yaml` builds the same objects
# from YAML; building them directly skips a YAML round trip.
from tflite_micro.tensorflow.lite.micro.compression import spec as lut_spec

from tflite_export import converter
from tflite_export import evaluate
from tflite_export import report

# The ops whose constant kernel (input 1) and bias (input 2) TFLM reads.
_KERNEL_OPS = {schema.BuiltinOperator.CONV_2D,
               schema.BuiltinOperator.DEPTHWISE_CONV_2D,
               schema.BuiltinOperator.FULLY_CONNECTED}
_KERNEL_INPUT, _BIAS_INPUT = 1, 2
# A channel's codes count as a grid of k multiples (k <= this) only where
# every code is round(127 j / k); past a few dozen any values would pass.
MAX_MULTIPLE = 32
_HALF_CODE = 0.5 + 1e-6
# LUT indices are 1-7 bits wide (the DECODE operator's limit).
MAX_INDEX_BITS = 7
_FLOAT_TYPES = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16}


def convert_int8(model, calibration: tf.data.Dataset) -> bytes:
  """The full-integer int8 file of `model` (int8 inputs and outputs) that
  TFLM runs; raises ValueError naming an op left in float."""
  content = converter.convert(model, converter.Quantization.INT8,
                              representative_data=calibration,
                              integer_io=True)
  check_ops(content)
  return content


def check_ops(content: bytes) -> None:
  """Raises ValueError naming the first op with a float input or output:
  TFLM runs int8 kernels (a float op would need float kernels the device
  may not have, and defeats the int8 arena)."""
  model = flatbuffer_utils.convert_bytearray_to_object(content)
  for subgraph in model.subgraphs:
    for index, op in enumerate(subgraph.operators):
      for tensor_index in list(op.inputs) + list(op.outputs):
        if tensor_index < 0:
          continue
        tensor = subgraph.tensors[tensor_index]
        if tensor.type in _FLOAT_TYPES:
          name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
          raise ValueError(
              f'The file is not full-integer: op {index} ({name}) has float '
              f'tensor {tensor.name.decode()!r}, which TFLM would run in '
              'float. Give a model whose every layer int8 conversion '
              'quantizes (no custom or float-only ops).')


@dataclasses.dataclass
class LutChoice:
  """How one kernel is stored: `bits`-wide indices into one table per
  channel along `axis` (None: one table for the tensor), or left int8
  (`bits` 0)."""
  tensor: int  # index in subgraph 0
  name: str
  bits: int
  axis: Optional[int]
  int8_bytes: int
  lut_bytes: int  # indices + tables + DECODE header; int8_bytes if left


def _index_bits(values_count: int) -> int:
  return max(1, (values_count - 1).bit_length())


def lut_bytes(array: np.ndarray, axis: Optional[int]) -> tuple:
  """(index bits, bytes stored) of `array` LUT-compressed with one table
  per slice along `axis` (None: one table); bits above MAX_INDEX_BITS mean
  it cannot be."""
  if axis is None:
    table = len(np.unique(array))
    tables = 1
  else:
    slices = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
    table = max(len(np.unique(s)) for s in slices)
    tables = len(slices)
  bits = _index_bits(table)
  # 16 bytes of DECODE header, then the tables padded to one stride.
  stored = math.ceil(array.size * bits / 8) + 16 + (
      tables * table * array.itemsize)
  return bits, stored


def _kernels(model):
  """[(op, kernel tensor index, bias tensor index or -1)] of subgraph 0's
  convolutions and fully connected ops with constant kernels."""
  subgraph = model.subgraphs[0]
  found = []
  for op in subgraph.operators:
    if model.operatorCodes[op.opcodeIndex].builtinCode not in _KERNEL_OPS:
      continue
    kernel = op.inputs[_KERNEL_INPUT]
    if model.buffers[subgraph.tensors[kernel].buffer].data is None:
      continue
    bias = op.inputs[_BIAS_INPUT] if len(op.inputs) > _BIAS_INPUT else -1
    found.append((op, kernel, bias))
  return found


def _array(model, tensor, dtype):
  return np.frombuffer(bytes(model.buffers[tensor.buffer].data),
                       dtype).reshape(tensor.shape)


def lut_plan(content: bytes) -> list:
  """A `LutChoice` for each int8 kernel of `content`: its tables follow its
  quantization (one per channel along its quantized dimension where it has
  a scale per channel, else one). A kernel is compressed only where the
  stored file (`strip_strings`) comes out smaller with it: its DECODE op,
  output and ancillary tensors cost 240-530 bytes on LeNet-5."""
  # TFLM's DECODE (0.dev20261023) decodes a table that does not follow the
  # kernel's quantization into wrong values (measured: a per-tensor table of
  # a per-channel kernel took a LeNet-5 from 92% to 8%), so no other choice.
  model = flatbuffer_utils.convert_bytearray_to_object(content)
  choices = []
  for _, index, _ in _kernels(model):
    tensor = model.subgraphs[0].tensors[index]
    if tensor.type != schema.TensorType.INT8:
      continue
    array = _array(model, tensor, np.int8)
    axis = (tensor.quantization.quantizedDimension
            if len(tensor.quantization.scale) > 1 else None)
    bits, stored = lut_bytes(array, axis)
    choices.append(LutChoice(index, tensor.name.decode(), bits, axis,
                             array.size, stored))
  # Largest gain first, each kept only if the file shrinks with it.
  kept = []
  size = len(strip_strings(content))
  for choice in sorted(choices, key=lambda c: c.lut_bytes - c.int8_bytes):
    if choice.bits > MAX_INDEX_BITS or choice.lut_bytes >= choice.int8_bytes:
      continue
    trial = len(strip_strings(compress(content, kept + [choice])))
    if trial < size:
      kept.append(choice)
      size = trial
  return [c if c in kept else dataclasses.replace(
      c, bits=0, lut_bytes=c.int8_bytes) for c in choices]


def compress(content: bytes, choices: list) -> bytes:
  """`content` with the kernels `choices` compress stored as LUTs (DECODE
  ops inserted); `content` itself where none is."""
  specs = [lut_spec.Tensor(
      subgraph=0, tensor=c.tensor,
      compression=[lut_spec.LookUpTableCompression(
          index_bitwidth=c.bits,
          mode=(lut_spec.PerTensor() if c.axis is None
                else lut_spec.PerChannel(axis=c.axis)))])
           for c in choices if c.bits]
  if not specs:
    return content
  return bytes(compression.compress(content, specs))


def _grid_multiple(codes: np.ndarray) -> Optional[int]:
  """The smallest k <= MAX_MULTIPLE with every nonzero |code| within half
  a code of 127 j / k for a whole j >= 1 (the converter's rounding of
  levels j*q with k*q the largest; float error turns its 63.5 to 63 or
  64), or None."""
  magnitudes = np.unique(np.abs(codes[codes != 0]))
  if magnitudes.size == 0:
    return None
  for k in range(1, MAX_MULTIPLE + 1):
    multiples = np.round(magnitudes * k / 127)
    if (multiples >= 1).all() and (
        np.abs(127 * multiples / k - magnitudes) <= _HALF_CODE).all():
      return k
  return None


def snap_levels(content: bytes) -> tuple:
  """(content, {kernel name: every channel exact}) with each int8 kernel
  channel whose codes are a rounded grid of k multiples rewritten as exact
  multiples j*(127 // k) of a step 127/(k (127 // k)) times the old one, and
  its bias requantized to the new scale (TFLM checks bias scale = input
  scale x kernel scale)."""
  model = flatbuffer_utils.convert_bytearray_to_object(content)
  subgraph = model.subgraphs[0]
  exact = {}
  for _, index, bias_index in _kernels(model):
    tensor = subgraph.tensors[index]
    quantization = tensor.quantization
    if tensor.type != schema.TensorType.INT8 or quantization is None:
      continue
    axis = quantization.quantizedDimension if len(
        quantization.scale) > 1 else None
    codes = _array(model, tensor, np.int8).astype(np.int32)
    channels = np.moveaxis(codes, axis, 0) if axis is not None else codes[
        None]
    scales = np.asarray(quantization.scale, np.float64)
    factors = np.ones(len(scales))
    all_exact = True
    for channel, values in enumerate(channels):
      k = _grid_multiple(values)
      if k is None:
        all_exact = all_exact and not np.any(values)
        continue
      step = 127 // k
      values[...] = np.sign(values) * np.round(
          np.abs(values) * k / 127) * step
      factors[channel] = 127 / (k * step)
    exact[tensor.name.decode()] = all_exact
    if np.all(factors == 1):
      continue
    snapped = (np.moveaxis(channels, 0, axis) if axis is not None
               else channels[0])
    model.buffers[tensor.buffer].data = snapped.astype(np.int8).tobytes()
    quantization.scale = list((scales * factors).astype(np.float32))
    if bias_index >= 0:
      bias = subgraph.tensors[bias_index]
      values = _array(model, bias, np.int32).astype(np.float64)
      model.buffers[bias.buffer].data = np.round(
          values / factors).astype(np.int32).tobytes()
      bias.quantization.scale = list(
          (np.asarray(bias.quantization.scale, np.float64) * factors
           ).astype(np.float32))
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), exact


def strip_strings(content: bytes) -> bytes:
  """`content` without the names of its tensors, subgraphs and signatures
  (about 1 KB on LeNet-5), which TFLM does not read."""
  model = flatbuffer_utils.convert_bytearray_to_object(content)
  flatbuffer_utils.strip_strings(model)
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@contextlib.contextmanager
def _stderr_to(path: str):
  """Sends the process's stderr (the interpreter's C++ messages) to
  `path` while inside."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(path, 'wb') as target:
    os.dup2(target.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def _interpreter(content: bytes):
  """A TFLM interpreter of `content` in an arena large enough: ten times
  the file, at least 1 MiB, doubled until it allocates (too small an arena
  can crash the interpreter instead of failing, so none is tried)."""
  size = max(10 * len(content), 1 << 20)
  with tempfile.TemporaryDirectory() as folder:
    while True:
      try:
        with _stderr_to(os.path.join(folder, 'stderr')):
          return micro_runtime.Interpreter.from_bytes(content,
                                                      arena_size=size)
      except RuntimeError:
        size *= 2
        if size > 1 << 30:
          raise ValueError('The TFLM interpreter fails to allocate the file '
                           'in any arena up to 1 GiB.') from None


_ARENA_TOTAL = re.compile(rb'Arena allocation total (\d+) bytes')


def arena_bytes(content: bytes) -> int:
  """The tensor arena the TFLM interpreter uses to run `content`: the RAM a
  device gives it (TFLM's RecordingMicroAllocator's total, after one
  inference)."""
  interpreter = _interpreter(content)
  details = interpreter.get_input_details(0)
  interpreter.set_input(np.zeros(details['shape'], details['dtype']), 0)
  interpreter.invoke()
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, 'allocations')
    with _stderr_to(path):
      interpreter.print_allocations()
    with open(path, 'rb') as f:
      return int(_ARENA_TOTAL.search(f.read()).group(1))


def predict(content: bytes, x: np.ndarray) -> np.ndarray:
  """The TFLM interpreter's outputs (as stored: int8 for an int8 file) for
  each example of `x`, run one at a time as a device runs them."""
  interpreter = _interpreter(content)
  details = interpreter.get_input_details(0)
  scale, = details['quantization_parameters']['scales'] or [0.0]
  zero_point, = details['quantization_parameters']['zero_points'] or [0]
  inputs = evaluate.to_input_type(
      {'dtype': details['dtype'], 'quantization': (scale, zero_point)}, x)
  outputs = []
  for example in inputs:
    interpreter.set_input(example[None], 0)
    interpreter.invoke()
    outputs.append(interpreter.get_output(0)[0].copy())
  return np.stack(outputs)


def export_micro(model, x_test: np.ndarray, y_test: np.ndarray,
                 calibration: tf.data.Dataset,
                 output_dir: Optional[str] = None) -> dict:
  """Writes `micro.tflite` (LUT-compressed full int8) and `micro_int8.tflite`
  (the same before compression) into `output_dir`, and measures them.

  Both files are stored without names (`strip_strings`); the report names
  kernels by their tensor names in the converted file.

  Returns the report's `micro`: {flash_bytes (the file as stored),
  arena_bytes, accuracy (TFLM, on the test set), lut_bits ({kernel tensor:
  index bits, 0 where left int8}), lut_axis ({kernel: 'per_channel' or
  'per_tensor'}), levels_exact ({kernel: every channel's levels exact int8
  multiples}), int8_bytes, int8_accuracy_litert (the uncompressed file in
  LiteRT's built-in kernels), outputs_equal (TFLM's outputs of the
  compressed file equal the uncompressed file's on every test example)}."""
  named, exact = snap_levels(convert_int8(model, calibration))
  choices = lut_plan(named)
  content = strip_strings(compress(named, choices))
  int8 = strip_strings(named)
  outputs = predict(content, x_test)
  uncompressed_outputs = predict(int8, x_test)
  # LiteRT's built-in kernels: reference int8 arithmetic, as TFLM's (XNNPACK
  # rounds differently and can flip an example).
  litert = evaluate.accuracy(
      int8, tf.data.Dataset.from_tensor_slices((x_test, y_test)),
      runtime='builtin')
  if output_dir:
    report.write_tflite(os.path.join(output_dir, 'micro.tflite'), content)
    report.write_tflite(os.path.join(output_dir, 'micro_int8.tflite'), int8)
  return {
      'flash_bytes': len(content),
      'arena_bytes': arena_bytes(content),
      'accuracy': evaluate.top1_accuracy(outputs, y_test),
      'lut_bits': {c.name: c.bits for c in choices},
      'lut_axis': {c.name: ('per_tensor' if c.axis is None else
                            'per_channel') for c in choices if c.bits},
      'levels_exact': exact,
      'int8_bytes': len(int8),
      'int8_accuracy_litert': litert,
      'outputs_equal': bool(np.array_equal(outputs, uncompressed_outputs)),
  }


def summary_line(report: dict) -> str:
  """The line the main job prints about `export_micro`'s report."""
  compressed = [name for name, bits in report['lut_bits'].items() if bits]
  return (f'TFLite Micro file: {report["flash_bytes"]:,} bytes of flash '
          f'({report["int8_bytes"]:,} before LUT compression of '
          f'{len(compressed)} of {len(report["lut_bits"])} kernels), arena '
          f'{report["arena_bytes"]:,} bytes, accuracy in the TFLM '
          f'interpreter {100 * report["accuracy"]:.2f}% (int8 in LiteRT '
          f'{100 * report["int8_accuracy_litert"]:.2f}%; compressed outputs '
          f'equal the int8 file\'s: '
          f'{"yes" if report["outputs_equal"] else "NO"})')
