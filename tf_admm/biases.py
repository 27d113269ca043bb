"""Biases stored in few bytes: fixed-point values, units ordered by bias.

Quantized kernels ship as packed integer codes, but biases stay float32,
as TFLite's float kernels read them; in a heavily pruned model they are a
large share of the compressed file (LeNet-5 at 169x keeps 196 fc1 units
for 798 fc1 weights; rounding and ordering its biases as below took the
packed file from 6,808 to 5,866 gzip bytes).

`round_biases` puts each layer's biases on the grid {k * 2^-e : |k| <
2^(bits-1)} with the smallest power-of-two step that holds the largest.
float32 stores such a value exactly in at most bits - 1 significant bits,
so its low mantissa bytes are zero, which gzip stores in a few bits.
The model changes: each bias moves by at most half a step, so measure its
accuracy afterwards. The format does not: the file still holds float32
biases, which only get smaller under gzip.

`units_sorted_by_bias` reorders the units of each top-level Dense layer
that feeds a Dense layer (`dead_units.dense_pairs`) by bias, the next
kernel's rows with them, so that biases sharing their sign and exponent
bytes sit side by side for gzip to find. The model computes the same, up
to float summation order.
"""

import numpy as np

from tf_admm import attach
from tf_admm import dead_units
from tf_admm import weights as weights_lib


def fixed_point_step(values: np.ndarray, bits: int) -> float:
  """The smallest power of two s with max|values| <= (2^(bits-1) - 1) * s;
  0.0 for all-zero values."""
  check_bits(bits)
  largest = float(np.abs(values).max(initial=0.0))
  if largest == 0.0:
    return 0.0
  return float(2.0 ** np.ceil(np.log2(largest / (2 ** (bits - 1) - 1))))


def to_fixed_point(values: np.ndarray, bits: int) -> np.ndarray:
  """`values` rounded to the nearest multiple of their `fixed_point_step`."""
  return _on_grid(values, fixed_point_step(values, bits))


def _on_grid(values, step) -> np.ndarray:
  if step == 0.0:
    return np.array(values, np.float32)
  # + 0.0 turns -0.0 into 0.0: one zero pattern for gzip.
  return (np.round(np.asarray(values, np.float64) / step) * step + 0.0
          ).astype(np.float32)


def round_biases(model, bits: int) -> dict:
  """Rounds the bias of every layer that has one (`to_fixed_point`, one
  step per layer), in place.

  Returns:
    {layer path: step} of the layers with a nonzero bias.
  """
  check_bits(bits)
  steps = {}
  for path, layer in weights_lib.layers_with_paths(model):
    bias = getattr(layer, 'bias', None)
    if bias is None:
      continue
    values = bias.numpy()
    step = fixed_point_step(values, bits)
    if step:
      bias.assign(_on_grid(values, step))
      steps[path] = step
  return steps


def units_sorted_by_bias(model):
  """A plain copy of `model` (`attach.remove_admm`) whose top-level Dense
  layers that feed a Dense layer have their units in order of bias."""
  copy = attach.remove_admm(model)
  for first, second in dead_units.dense_pairs(copy):
    order = np.argsort(first.bias.numpy(), kind='stable')
    first.kernel.assign(first.kernel.numpy()[:, order])
    first.bias.assign(first.bias.numpy()[order])
    second.kernel.assign(second.kernel.numpy()[order])
  return copy


def check_bits(bits) -> None:
  """Raises ValueError unless `bits` is a usable number of bias bits."""
  if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
    raise ValueError(f'Bias bits must be an integer from 2 to 16, not '
                     f'{bits!r}; 8 keeps biases within 1% of their largest.')
