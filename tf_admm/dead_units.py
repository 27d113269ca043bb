"""Units a pruned model cannot use, and their weights zeroed exactly.

Heavy pruning leaves some units of a Dense layer with no nonzero incoming
weight (their output is the constant act(bias)) and some with no nonzero
outgoing weight (nothing reads their output). Where a Dense layer A feeds
only a Dense layer B, both kinds go without changing what the model
computes:
  dead unit j (A.kernel[:, j] = 0): B.bias += act(A.bias[j]) * B.kernel[j];
    then B.kernel[j] = 0 and A.bias[j] = 0;
  unused unit j (B.kernel[j] = 0): A.kernel[:, j] = 0 and A.bias[j] = 0.
Zeros are on every level set, so quantized weights stay on their levels;
the files get smaller (fewer nonzeros, zero biases compress) and the
compression rate rises. `cut_out` then removes such units from their layers
altogether (`tf_admm.surgery`), for files that carry neither their zeros nor
their biases.
"""

import numpy as np

from tf_admm import attach
from tf_admm import channel_graph
from tf_admm import keras_compat
from tf_admm import projections
from tf_admm import surgery
from tf_admm import weights as weights_lib
from tf_admm.channel_handlers import OPAQUE


def dense_pairs(model):
  """[(A, B)]: Dense layers A of `model` (nested models' included) whose
  output only a Dense layer B reads, directly, and is no output of the
  model; both with biases, A without softmax (which mixes its units). A's
  units can then be zeroed or reordered with B's kernel rows alone."""
  dense = keras_compat.keras_of(model).layers.Dense
  graph = channel_graph.ChannelGraph(model)
  outputs = set(graph.outputs)
  pairs = []
  for call in graph.calls:
    layer = call.layer
    if type(layer) is not dense or call.kind == OPAQUE:  # pylint: disable=unidiomatic-typecheck
      continue
    following = graph.readers.get(call.outputs[0], [])
    if (len(following) == 1 and call.outputs[0] not in outputs and
        not call.handler.mixes_outputs(layer) and
        type(following[0].layer) is dense and  # pylint: disable=unidiomatic-typecheck
        following[0].kind != OPAQUE and
        following[0].layer.use_bias and layer.use_bias):
      pairs.append((layer, following[0].layer))
  return pairs


def remove_dead_units(model) -> dict:
  """Zeroes the weights of dead and unused units (see the module), in place.

  Returns:
    {layer name: {'dead': units, 'unused': units, 'weights_zeroed':
     nonzero weights removed}} for each Dense layer feeding a Dense layer.
  """
  removed = {}
  for first, second in dense_pairs(model):
    # The variables, not get_weights(): on Keras 3 a layer's weights also
    # hold its regularizer's state.
    kernel, bias = first.kernel.numpy(), first.bias.numpy()
    next_kernel, next_bias = second.kernel.numpy(), second.bias.numpy()
    before = np.count_nonzero(kernel) + np.count_nonzero(next_kernel)
    dead = ~kernel.any(axis=0)
    constant = np.asarray(first.activation(bias * dead)) * dead
    next_bias = next_bias + constant @ next_kernel
    next_kernel[dead] = 0
    unused = ~next_kernel.any(axis=1) & ~dead
    kernel[:, unused] = 0
    bias[dead | unused] = 0
    for variable, value in ((first.kernel, kernel), (first.bias, bias),
                            (second.kernel, next_kernel),
                            (second.bias, next_bias)):
      variable.assign(value)
    removed[first.name] = {
        'dead': int(dead.sum()), 'unused': int(unused.sum()),
        'weights_zeroed': int(before - np.count_nonzero(kernel) -
                              np.count_nonzero(next_kernel))}
  return removed


def cut_out(model, probe):
  """A smaller plain copy of `model` without the units and channels that
  only hold zeros (what `remove_dead_units` leaves, and filters pruned
  whole), computing the same: checked on the inputs `probe`.

  Returns:
    (model, {layer name: (units or channels before, after)} for the layers
     that lost some). Where surgery does not apply (a Keras 3 model, or a
     layer it does not handle) or finds nothing to cut: `model` itself, {}.
  """
  try:
    # A channel is constant only where some kernel has a zero output slice.
    if not any(_has_zero_output_slice(w.variable.numpy(), w.kind.output_axis)
               for w in weights_lib.prunable_weights(model, require=False)):
      return model, {}
    plain = attach.remove_admm(model)
    small, widths = surgery.remove_channels(plain)
  except ValueError:  # inputs of unknown size
    return model, {}
  surgery.checked_difference(plain, small, probe)
  cut = {name: w for name, w in widths.items() if w[0] != w[1]}
  return (small, cut) if cut else (model, {})


def _has_zero_output_slice(kernel, axis) -> bool:
  if axis is None:
    return False
  return not projections.rows_along(kernel, axis).any(axis=1).all()
