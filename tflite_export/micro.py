"""TensorFlow Lite for Microcontrollers (TFLM) files, sized as a device
stores them and checked in the TFLM interpreter (`tflite_export.tflm`).

TFLM runs full-integer int8 models; its own weight compression stores a
kernel holding few distinct values as k-bit indices into per-channel (or
per-tensor) tables, decoded at run time by DECODE operators: the form ADMM
quantization leaves (a few levels per channel, 0 among them where pruned).

  1. `convert_int8`: full int8 with int8 inputs and outputs; a model with an
     op TFLM would run in float is refused, naming the op.
  2. `snap_levels`: the converter maps each channel's largest weight to
     127, so levels j*q become uneven codes round(127 j / k); each kernel
     whose float weights lie on a grid per channel is rewritten with its
     levels exact multiples of one int8 step (its bias requantized).
  3. `lut_plan`: per kernel, index bits for the values of each channel (or
     of the tensor, for a kernel with one scale); a kernel whose
     compression would not shrink the stored file is left int8.
  4. `export_micro`: compresses, strips the names TFLM does not read,
     measures the arena the interpreter needs, and scores the test set in
     TFLM against the uncompressed file.
"""

import dataclasses
import math
import os
from typing import Optional

import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from tflite_export import converter
from tflite_export import evaluate
from tflite_export import packed
from tflite_export import report
from tflite_export import tflm

# The ops whose constant kernel (input 1) and bias (input 2) TFLM reads.
_KERNEL_OPS = {schema.BuiltinOperator.CONV_2D,
               schema.BuiltinOperator.DEPTHWISE_CONV_2D,
               schema.BuiltinOperator.FULLY_CONNECTED}
_KERNEL_INPUT, _BIAS_INPUT = 1, 2
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


def lut_bytes(array: np.ndarray, axis: Optional[int]) -> tuple:
  """(index bits, bytes stored) of `array` LUT-compressed with one table
  per slice along `axis` (None: one table); bits above MAX_INDEX_BITS mean
  it cannot be."""
  slices = _channels_first(array, axis).reshape(
      1 if axis is None else array.shape[axis], -1)
  table = max(len(np.unique(s)) for s in slices)
  bits = max(1, (table - 1).bit_length())
  # 16 bytes of DECODE header, then the tables padded to one stride.
  stored = math.ceil(array.size * bits / 8) + 16 + (
      len(slices) * table * array.itemsize)
  return bits, stored


def _channels_first(array: np.ndarray, axis: Optional[int]) -> np.ndarray:
  """`array` with its `axis` first (None: one channel, the whole array)."""
  return array[None] if axis is None else np.moveaxis(array, axis, 0)


def _kernels(model):
  """[(kernel tensor index, bias tensor index or -1, the kernel's
  quantized dimension or None where it has one scale)] of subgraph 0's
  convolutions and fully connected ops with constant kernels."""
  subgraph = model.subgraphs[0]
  found = []
  for op in subgraph.operators:
    if model.operatorCodes[op.opcodeIndex].builtinCode not in _KERNEL_OPS:
      continue
    kernel = subgraph.tensors[op.inputs[_KERNEL_INPUT]]
    if model.buffers[kernel.buffer].data is None:
      continue
    quantization = kernel.quantization
    axis = (quantization.quantizedDimension
            if quantization is not None and quantization.scale is not None
            and len(quantization.scale) > 1 else None)
    bias = op.inputs[_BIAS_INPUT] if len(op.inputs) > _BIAS_INPUT else -1
    found.append((op.inputs[_KERNEL_INPUT], bias, axis))
  return found


def _array(model, tensor, dtype):
  return np.frombuffer(bytes(model.buffers[tensor.buffer].data),
                       dtype).reshape(tensor.shape)


def lut_plan(content: bytes) -> list:
  """A `LutChoice` for each int8 kernel of `content`: its tables follow its
  quantization (one per channel along its quantized dimension where it has
  a scale per channel, else one). A kernel is compressed only where the
  stored file (`strip_strings`) comes out smaller with it: its DECODE op,
  output and ancillary tensors cost a few hundred bytes."""
  # TFLM's DECODE (0.dev20261023) decodes a table that does not follow the
  # kernel's quantization into wrong values (measured: a per-tensor table of
  # a per-channel kernel took a small CNN's accuracy to chance), so no other
  # choice.
  model = flatbuffer_utils.convert_bytearray_to_object(content)
  choices = []
  for index, _, axis in _kernels(model):
    tensor = model.subgraphs[0].tensors[index]
    if tensor.type != schema.TensorType.INT8:
      continue
    array = _array(model, tensor, np.int8)
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
  _, compression, spec = tflm.modules()
  specs = [spec.Tensor(
      subgraph=0, tensor=c.tensor,
      compression=[spec.LookUpTableCompression(
          index_bitwidth=c.bits,
          mode=(spec.PerTensor() if c.axis is None
                else spec.PerChannel(axis=c.axis)))])
           for c in choices if c.bits]
  if not specs:
    return content
  return bytes(compression.compress(content, specs))


def snap_levels(content: bytes, float_kernels: dict) -> tuple:
  """(content, {kernel name: its levels exact}): each int8 kernel with a
  scale per channel whose float kernel (`float_kernels`: {tensor name:
  values} of the float file of the same model) lies on a symmetric grid in
  every channel (`packed.grid_codes`: levels c*q) gets the codes
  c*(127 // k), k its channel's largest |c|, at scale q / (127 // k): each
  level an exact int8 multiple. Its bias is requantized to the new scales
  (TFLM checks bias scale = input scale x kernel scale)."""
  model = flatbuffer_utils.convert_bytearray_to_object(content)
  subgraph = model.subgraphs[0]
  exact = {}
  for index, bias_index, axis in _kernels(model):
    tensor = subgraph.tensors[index]
    name = tensor.name.decode()
    if tensor.type != schema.TensorType.INT8:
      continue
    kernel = float_kernels.get(name)
    exact[name] = False
    if axis is None or kernel is None or kernel.shape != tuple(tensor.shape):
      continue
    channels = _channels_first(kernel, axis)
    codes = packed.grid_codes(channels)
    if codes is None:
      continue
    largest = np.abs(codes).max(axis=1)
    if largest.max() > 127:
      continue
    steps = 127 // np.maximum(largest, 1)
    grid = np.abs(channels.reshape(len(codes), -1)).max(axis=1) / np.maximum(
        largest, 1)
    old = np.asarray(tensor.quantization.scale, np.float64)
    new = np.where(largest > 0, grid / steps, old)
    snapped = (codes * steps[:, None]).reshape(channels.shape)
    model.buffers[tensor.buffer].data = np.moveaxis(
        snapped, 0, axis).astype(np.int8).tobytes()
    tensor.quantization.scale = list(new.astype(np.float32))
    if bias_index >= 0:
      bias = subgraph.tensors[bias_index]
      factors = new / old
      model.buffers[bias.buffer].data = np.round(
          _array(model, bias, np.int32) / factors).astype(np.int32).tobytes()
      bias.quantization.scale = list(
          (np.asarray(bias.quantization.scale, np.float64) * factors
           ).astype(np.float32))
    exact[name] = True
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), exact


def strip_strings(content: bytes) -> bytes:
  """`content` without the names of its tensors, subgraphs and signatures
  (about 1 KB on LeNet-5), which TFLM does not read."""
  model = flatbuffer_utils.convert_bytearray_to_object(content)
  flatbuffer_utils.strip_strings(model)
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def export_micro(model, x_test: np.ndarray, y_test: np.ndarray,
                 calibration: tf.data.Dataset,
                 output_dir: Optional[str] = None) -> dict:
  """Writes `micro.tflite` (full int8, LUT-compressed) and
  `micro_int8.tflite` (the same before compression) into `output_dir`, and
  measures them. Should the compressed file's outputs differ from the
  uncompressed one's on a test example, `micro.tflite` is the uncompressed
  file.

  Both files are stored without names (`strip_strings`); the report names
  kernels by their tensor names in the converted file.

  Returns the report's `micro`: {flash_bytes (micro.tflite as stored),
  arena_bytes, accuracy (TFLM, on the test set), lut_bits ({kernel tensor:
  index bits, 0 where stored int8}), lut_axis ({compressed kernel:
  'per_channel' or 'per_tensor'}), levels_exact ({kernel: its levels exact
  int8 multiples}), io_quantization (`tflm.io_quantization`), int8_bytes,
  int8_accuracy_litert (the uncompressed file in LiteRT's built-in
  kernels), outputs_equal (TFLM's outputs of the compressed file equal the
  uncompressed file's on every test example), compressed (micro.tflite is
  the compressed file)}."""
  tflm.check_available()
  named, exact = snap_levels(
      convert_int8(model, calibration),
      packed.float_kernels_by_name(converter.convert(model)))
  choices = lut_plan(named)
  int8 = strip_strings(named)
  content = strip_strings(compress(named, choices))
  outputs = tflm.predict(content, x_test)
  int8_outputs = tflm.predict(int8, x_test)
  equal = bool(np.array_equal(outputs, int8_outputs))
  if not equal:
    content, outputs = int8, int8_outputs
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
      'arena_bytes': tflm.arena_bytes(content),
      'accuracy': evaluate.top1_accuracy(outputs, y_test),
      'lut_bits': {c.name: c.bits if equal else 0 for c in choices},
      'lut_axis': {c.name: ('per_tensor' if c.axis is None else
                            'per_channel')
                   for c in choices if c.bits and equal},
      'levels_exact': exact,
      'io_quantization': tflm.io_quantization(content),
      'int8_bytes': len(int8),
      'int8_accuracy_litert': litert,
      'outputs_equal': equal,
      'compressed': equal and content != int8,
  }


def summary_line(micro: dict) -> str:
  """The line the main job prints about `export_micro`'s report."""
  compressed = [name for name, bits in micro['lut_bits'].items() if bits]
  return (f'TFLite Micro file: {micro["flash_bytes"]:,} bytes of flash '
          f'({micro["int8_bytes"]:,} before LUT compression of '
          f'{len(compressed)} of {len(micro["lut_bits"])} kernels), arena '
          f'{micro["arena_bytes"]:,} bytes, accuracy in the TFLM '
          f'interpreter {100 * micro["accuracy"]:.2f}% (int8 in LiteRT '
          f'{100 * micro["int8_accuracy_litert"]:.2f}%; compressed outputs '
          f'equal the int8 file\'s: '
          f'{"yes" if micro["outputs_equal"] else "NO, so it is stored int8"})')
