"""Sub-8-bit weights in a .tflite file: packed INT2 and INT4 tensors (INT8
where the codes need it).

The TFLite converter writes weights as float or int8 only. A float .tflite
whose FULLY_CONNECTED and CONV_2D kernels already lie on symmetric
per-channel grids (what `tf_admm.constraints.Quantize` trains: uniform,
ternary and binary levels, pruned weights 0) is rewritten by
the LiteRT Quantizer's (litert-quantizer, formerly ai-edge-quantizer)
DEQUANTIZED_WEIGHT_RECOVERY algorithm, which recovers each channel's (or the whole tensor's, where one grid holds it) integer
codes and scale exactly and stores the codes packed:
  INT2 for codes in {-1, 0, 1} (ternary, binary) in FULLY_CONNECTED ops;
  INT4 for codes within ±7 (uniform levels up to 3 bits), and for every
    CONV_2D, since LiteRT 2.3 has no INT2 convolution kernel;
  INT8 for codes within ±127 (uniform levels of 4 to 7 bits: k bits take
    codes up to ±2^(k-1), one bit more than the papers' k with the 0).
Other kernels stay float and `Packed.float_kernels` names them: those not
on such a grid (k-means levels, unquantized layers, 8-bit uniform levels),
those of other ops (depthwise convolutions among them), and those with a
channel whose few codes share no unit step the recovery can find (the step
is the smallest gap between magnitudes: {3q, 5q} alone gives 2q, and 3q
is no multiple of it; never at 3 bits or less, where any set of codes from
1 to 4 works).
"""

import enum
import functools
import json
import re
from typing import NamedTuple

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from litert_quantizer import algorithm_manager
from litert_quantizer import default_policy
from litert_quantizer import qtyping
from litert_quantizer import quantizer
from litert_quantizer.utils import tfl_flatbuffer_utils

from tf_admm import weights as weights_lib

_RECOVERY = quantizer.AlgorithmName.DEQUANTIZED_WEIGHT_RECOVERY
_OPS = {schema.BuiltinOperator.FULLY_CONNECTED:
            qtyping.TFLOperationName.FULLY_CONNECTED,
        schema.BuiltinOperator.CONV_2D: qtyping.TFLOperationName.CONV_2D}
# {op: which input is a layer's kernel} for the ops packed and the others a
# quantized Keras layer may become (DepthwiseConv2D, Conv2DTranspose,
# Conv3D, Conv3DTranspose, EinsumDense, Embedding's table lookup), whose
# kernels stay float.
_KERNEL_INPUTS = {
    **dict.fromkeys(_OPS, 1),
    schema.BuiltinOperator.DEPTHWISE_CONV_2D: 1,
    schema.BuiltinOperator.TRANSPOSE_CONV: 1,
    schema.BuiltinOperator.CONV_3D: 1,
    schema.BuiltinOperator.CONV_3D_TRANSPOSE: 1,
    schema.BuiltinOperator.BATCH_MATMUL: 1,
    schema.BuiltinOperator.EMBEDDING_LOOKUP: 1,
    schema.BuiltinOperator.GATHER: 0,
}
_TENSORWISE = qtyping.QuantGranularity.TENSORWISE
_CHANNELWISE = qtyping.QuantGranularity.CHANNELWISE
_PACKED_TYPES = {schema.TensorType.INT2: 2, schema.TensorType.INT4: 4,
                 schema.TensorType.INT8: 8}
# How far a weight may sit from its channel's grid, relative to the
# channel's largest weight: float32 rounding of level values.
_GRID_TOLERANCE = 1e-5


class PackMode(enum.Enum):
  # A DEQUANTIZE op feeds float compute: outputs equal the float model's.
  WEIGHT_ONLY = 'weight_only'
  # Integer compute with activations quantized on the fly: faster, close.
  DYNAMIC = 'dynamic'


class Packed(NamedTuple):
  content: bytes  # the .tflite file
  bits: dict  # {weight tensor name: 2, 4 or 8} of the packed kernels
  float_kernels: list  # names of the constant kernels left float32


def grid_codes(kernel: np.ndarray):
  """The integer codes of a TFLite-layout kernel (output channels first)
  whose channels each lie on a symmetric grid {c * s}, found the way
  DEQUANTIZED_WEIGHT_RECOVERY finds them (s: the smallest gap between the
  channel's distinct magnitudes, 0 included); None if some channel is not
  on its grid."""
  rows = kernel.reshape(len(kernel), -1).astype(np.float64)
  codes = np.zeros(rows.shape, np.int64)
  for row, values in enumerate(rows):
    magnitudes = np.unique(np.abs(values))
    gaps = np.diff(np.concatenate([[0.0], magnitudes]))
    gaps = gaps[gaps > 0]
    if not gaps.size:
      continue  # an all-zero channel
    scale = gaps.min()
    codes[row] = np.round(values / scale)
    if np.abs(codes[row] * scale - values).max() > (
        _GRID_TOLERANCE * magnitudes[-1]):
      return None
  return codes


def packed_bits(codes, operator) -> int:
  """2, 4 or 8 for kernels with these codes in this op; 0: leave it
  float."""
  if codes is None:
    return 0
  largest = int(np.abs(codes).max())
  if largest <= 1 and operator == schema.BuiltinOperator.FULLY_CONNECTED:
    return 2
  for bits in (4, 8):
    if largest < 2**(bits - 1):
      return bits
  return 0


def _kernels(model):
  """[(op scope, operator, weight tensor, kernel array)] of the ops with
  constant float32 kernels (`_KERNEL_INPUTS`)."""
  found = []
  for subgraph in model.subgraphs:
    for op in subgraph.operators:
      operator = model.operatorCodes[op.opcodeIndex].builtinCode
      if operator not in _KERNEL_INPUTS:
        continue
      tensor = subgraph.tensors[op.inputs[_KERNEL_INPUTS[operator]]]
      data = model.buffers[tensor.buffer].data
      if tensor.type != schema.TensorType.FLOAT32 or data is None:
        continue
      kernel = np.frombuffer(bytes(data), np.float32).reshape(tensor.shape)
      found.append((tfl_flatbuffer_utils.get_op_scope(op, subgraph.tensors),
                    operator, tensor, kernel))
  return found


def float_kernels_by_name(content: bytes) -> dict:
  """{tensor name: values} of the kernels `content` keeps in float32."""
  return {tensor.name.decode(): kernel for _, _, tensor, kernel in
          _kernels(tfl_flatbuffer_utils.read_model(content))}


def float_kernel_sizes(content: bytes) -> dict:
  """{tensor name: element count} of the kernels `content` keeps in
  float32."""
  return {name: kernel.size
          for name, kernel in float_kernels_by_name(content).items()}


def weight_paths(float_content: bytes, model) -> dict:
  """{kernel tensor name in a float .tflite converted from `model`: the
  path of the model's weight that holds the same values (`'fc1/kernel'`)},
  for the kernels one weight alone matches (the converter renames tensors
  and lays kernels out its own way, but keeps their values)."""
  by_values = {}
  for weight in weights_lib.prunable_weights(model, require=False):
    key = np.sort(weight.variable.numpy(), axis=None).tobytes()
    by_values.setdefault(key, []).append(weight.path)
  found = {}
  for _, _, tensor, kernel in _kernels(
      tfl_flatbuffer_utils.read_model(float_content)):
    paths = by_values.get(np.sort(kernel, axis=None).tobytes(), [])
    if len(paths) == 1:
      found[tensor.name.decode()] = paths[0]
  return found


@functools.lru_cache(maxsize=None)
def _allow_weight_only_int2() -> None:
  """The quantizer's (0.10-0.11) policy lists weight-only configs at 4 and 8
  bits only (2-bit weights are listed for dynamic compute). The LiteRT
  DEQUANTIZE kernel reads INT2, so register the 2-bit weight-only config
  for the recovery algorithm, the same way the package builds its own."""
  policy = json.loads(default_policy.DEFAULT_JSON_POLICY)
  config = json.loads(json.dumps(policy['configs']['weightonly_wi4_afp32']))
  config['weight_tensor_config']['num_bits'] = 2
  policy['configs']['weightonly_wi2_afp32'] = config
  policy['ops_per_config']['weightonly_wi2_afp32'] = [
      'FULLY_CONNECTED', 'CONV_2D', 'EMBEDDING_LOOKUP']
  algorithm_manager.register_config_check_policy_func(
      _RECOVERY,
      default_policy.update_default_config_policy(json.dumps(policy)))


def pack(float_content: bytes, mode: PackMode = PackMode.WEIGHT_ONLY
         ) -> Packed:
  """Rewrites a float .tflite with its on-grid kernels packed.

  Raises:
    ValueError: if no kernel lies on a grid that INT2, INT4 or INT8 can
      hold (train with tf_admm.constraints.Quantize first).
  """
  mode = PackMode(mode)
  model = tfl_flatbuffer_utils.read_model(float_content)
  rules = []
  bits = {}
  float_kernels = []
  for scope, operator, tensor, kernel in _kernels(model):
    name = tensor.name.decode()
    if operator not in _OPS:
      float_kernels.append(name)
      continue
    # One scale for the tensor where one grid holds it all (per-layer
    # levels): hundreds of float scales fewer in the file. The quantizer
    # 0.10's recovery fails on tensor-wise 4-D kernels (a scale-rank error),
    # so convolutions keep one scale per channel.
    granularities = ((_TENSORWISE, kernel.reshape(1, -1)),) if (
        kernel.ndim == 2) else ()
    for granularity, rows in granularities + ((_CHANNELWISE, kernel),):
      width = packed_bits(grid_codes(rows), operator)
      if width:
        rules.append((scope, _OPS[operator], width, granularity))
        bits[name] = width
        break
    else:
      float_kernels.append(name)
  if not rules:
    raise ValueError(
        'No FULLY_CONNECTED or CONV_2D kernel of this model lies on a '
        'symmetric per-channel grid of at most 255 levels, so none can be '
        'packed into INT2/INT4/INT8: quantize the model with '
        'tf_admm.constraints.Quantize (uniform up to 7 bits, ternary or '
        'binary levels) first.')
  _allow_weight_only_int2()
  rewriter = quantizer.Quantizer(bytes(float_content))
  add = (rewriter.add_weight_only_config if mode is PackMode.WEIGHT_ONLY
         else rewriter.add_dynamic_config)
  for scope, operation, width, granularity in rules:
    add(regex=f'^{re.escape(scope)}$', operation_name=operation,
        num_bits=width, granularity=granularity, algorithm_key=_RECOVERY)
  result = rewriter.quantize(enable_progress_report=False)
  return Packed(bytes(result.quantized_model), bits,
                list(dict.fromkeys(float_kernels)))  # once if shared


def _unpack(data, bits, count):
  """Signed `bits`-bit codes packed low bits first, as LiteRT stores them."""
  raw = np.frombuffer(bytes(data), np.uint8)
  per_byte = 8 // bits
  fields = np.stack([(raw >> (bits * k)) & ((1 << bits) - 1)
                     for k in range(per_byte)], axis=1).reshape(-1)[:count]
  fields = fields.astype(np.int16)
  return np.where(fields >= 1 << (bits - 1), fields - (1 << bits), fields)


def packed_tensors(content: bytes) -> dict:
  """{tensor name: (bits, codes, dequantized float32 values)} of the
  INT2, INT4 and INT8 tensors of a packed .tflite file, in TFLite layout."""
  model = tfl_flatbuffer_utils.read_model(content)
  found = {}
  for subgraph in model.subgraphs:
    for tensor in subgraph.tensors:
      data = model.buffers[tensor.buffer].data
      if tensor.type not in _PACKED_TYPES or data is None:
        continue  # int8 activations hold no data
      bits = _PACKED_TYPES[tensor.type]
      shape = tuple(tensor.shape)
      codes = _unpack(data, bits, int(np.prod(shape))).reshape(shape)
      scale = np.asarray(tensor.quantization.scale, np.float32)
      axis = tensor.quantization.quantizedDimension
      scale = np.expand_dims(scale, tuple(
          i for i in range(len(shape)) if i != axis)) if scale.size > 1 else (
              scale.reshape(()))
      found[tensor.name.decode()] = (bits, codes,
                                     codes.astype(np.float32) * scale)
  return found
