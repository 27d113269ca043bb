"""Cutting pruned channels out: a smaller dense model computing the same.

A channel whose kernel slice is zero (`tf_admm.constraints.KeepChannels`)
outputs a constant: its activation of the bias, carried on through
BatchNormalization, activations and pooling. `remove_channels` finds every
channel that is constant over all positions, removes it from the layer that
makes it and from every layer that reads it (through the channel graph:
channel-wise layers, flattening, Add and its kind, Concatenate), and folds
its constant into the biases of the Dense and convolution layers that read
it. A channel stays where removing it would change the output:
- a zero-padded convolution reads a nonzero constant (the padding makes
  its contribution differ at the borders);
- it is added (`Add`) to a channel that stays: added channels stay or go
  together;
- it reaches a model output or a layer the graph keeps whole (OPAQUE:
  Softmax, recurrent layers, grouped convolutions, ...), or it is the last
  channel of its layer.

Models of either Keras, Sequential or functional, nested ones included, are
cut; layers the graph does not know, or shared by several calls, are kept
whole, with the channels they read and write.

`silence_pruned_channels` makes pruned channels output exactly 0 during
masked retraining (their biases and BatchNormalization scale and shift held
at 0), so that zero-padded convolutions and residual blocks can lose them
too.
"""

import dataclasses
from typing import Dict

import numpy as np
import tensorflow as tf

from tf_admm import channel_graph
from tf_admm import channel_handlers
from tf_admm import keras_compat
from tf_admm import masks as masks_lib
from tf_admm import weights as weights_lib
from tf_admm.channel_handlers import CHANNELWISE
from tf_admm.channel_handlers import CONCATENATE
from tf_admm.channel_handlers import FLATTEN
from tf_admm.channel_handlers import MERGE
from tf_admm.channel_handlers import PRODUCE

# A channel is constant if it varies over positions by less than this,
# relative to its size: float32 rounding, far below any real variation.
_CONSTANT_TOLERANCE = 1e-5


def check_supported(model) -> None:
  """Raises ValueError where surgery cannot run on `model` at all: a model
  that cannot be cloned (subclassed) or whose inputs have unknown sizes."""
  weights_lib.check_cloneable(model)
  unknown = [tuple(t.shape) for t in model.inputs if None in t.shape[1:]]
  if unknown:
    raise ValueError(
        f'Channel surgery needs inputs of known size; model {model.name!r} '
        f'takes {unknown[0]}. Build it with a fixed input shape.')


@dataclasses.dataclass
class _Channels:
  """What is known of one tensor's channels (its last axis)."""
  live: np.ndarray  # bool: varies over positions or examples; stays
  value: np.ndarray  # the constant of each channel that is not live


def _all_live(width) -> _Channels:
  return _Channels(np.ones(width, bool), np.zeros(width))


def _constant_example(shape, state: _Channels) -> np.ndarray:
  """One example of `shape` (batch first) holding each channel's constant
  everywhere (0 in live channels, which the caller does not read)."""
  values = np.where(state.live, 0.0, state.value).astype(np.float32)
  return np.broadcast_to(values, (1,) + tuple(shape[1:])).copy()


def _per_channel(output) -> tuple:
  """(constant, value): whether each channel of `output` (one example) is
  the same at every position, and its mean."""
  rows = np.asarray(output, np.float64).reshape(-1, np.shape(output)[-1])
  mean = rows.mean(axis=0)
  spread = rows.max(axis=0) - rows.min(axis=0)
  return spread <= _CONSTANT_TOLERANCE * (1 + np.abs(mean)), mean


@dataclasses.dataclass
class _Plan:
  channels: Dict[int, _Channels]  # by tensor key
  # Per producer path: (live inputs, folded constant per output channel).
  producers: Dict[str, tuple]


class _Surgeon:
  """Finds which channels stay: a forward pass over the graph computes
  which are constant; whatever must stay for the output to be exact is
  forced live, back to the layer that makes it, and the pass repeats until
  nothing more is forced."""

  def __init__(self, graph: channel_graph.ChannelGraph):
    self.graph = graph
    self.forced = {}  # tensor key: bool array

  def _width(self, key) -> int:
    return self.graph.shapes[key][-1]

  def _force(self, key, channels) -> bool:
    """Forces `channels` (bool) of tensor `key` live, and whatever they
    need upstream; returns whether anything was new."""
    current = self.forced.setdefault(key, np.zeros(self._width(key), bool))
    new = channels & ~current
    if not new.any():
      return False
    current |= new
    call = self.graph.maker.get(key)  # None: a model input
    kind = call.kind if call else None
    if kind == CHANNELWISE:
      self._force(call.inputs[0], current)
    elif kind == FLATTEN:
      source = call.inputs[0]
      self._force(source,
                  current.reshape(-1, self._width(source)).any(axis=0))
    elif kind == MERGE:
      for source in call.inputs:
        self._force(source, current)
    elif kind == CONCATENATE:
      start = 0
      for source in call.inputs:
        width = self._width(source)
        self._force(source, current[start:start + width])
        start += width
    return True

  def _forced(self, key):
    return self.forced.get(key, np.zeros(self._width(key), bool))

  def plan(self) -> _Plan:
    for key in self.graph.outputs:
      self._force(key, np.ones(self._width(key), bool))
    while True:
      plan = self._forward()
      if plan is not None:
        return plan

  def _forward(self):
    """One pass; None when it forced something new (the pass repeats)."""
    channels = {key: _all_live(self._width(key)) for key in self.graph.inputs}
    producers, changed = {}, False
    for call in self.graph.calls:
      sources = [channels[key] for key in call.inputs]
      input_shapes = self.graph.input_shapes(call)
      layer, output = call.layer, call.outputs[0]
      forced = self._forced(output)
      if call.kind == PRODUCE:
        if call.handler.mixes_outputs(layer):  # softmax: all stay
          forced = np.ones(self._width(output), bool)
        state, folded, needed = self._producer(call, sources[0], forced)
        if needed is not None:
          changed |= self._force(call.inputs[0], needed)
          width = self._width(output)  # stands in until the pass repeats
          state, folded = _all_live(width), np.zeros(width)
        producers[call.path] = (sources[0].live, folded)
      elif call.kind in (CHANNELWISE, MERGE):
        examples = [_constant_example(shape, source)
                    for shape, source in zip(input_shapes, sources)]
        result = layer(examples[0] if call.kind == CHANNELWISE else examples,
                       training=False)
        constant, value = _per_channel(result)
        live = np.logical_or.reduce([s.live for s in sources])
        state = _Channels(live | ~constant | forced, value)
      elif call.kind == FLATTEN:
        repeats = int(np.prod(input_shapes[0][1:-1]))
        state = _Channels(np.tile(sources[0].live, repeats) | forced,
                          np.tile(sources[0].value, repeats))
      elif call.kind == CONCATENATE:
        state = _Channels(np.concatenate([s.live for s in sources]) | forced,
                          np.concatenate([s.value for s in sources]))
      else:  # OPAQUE: reads every channel, its own stay
        for key in call.inputs:
          changed |= self._force(key, np.ones(self._width(key), bool))
        for key in call.outputs:
          channels[key] = _all_live(self._width(key))
        continue
      state.value = np.where(state.live, 0.0, state.value)
      if call.kind != PRODUCE:
        # A channel that stays needs the channels it is computed from.
        changed |= self._force(output, state.live)
      channels[output] = state
    return None if changed else _Plan(channels, producers)

  def _producer(self, call, source: _Channels, forced):
    """(output channels, folded constants, inputs that must stay or None)."""
    layer, handler = call.layer, call.handler
    kernel = handler.kernel(layer).numpy()
    reach = np.abs(kernel).reshape(-1, *kernel.shape[-2:]).max(axis=0) > 0
    response = handler.respond(
        layer, _constant_example(self.graph.input_shapes(call)[0], source))
    constant, folded = _per_channel(response)
    if not constant.all() or (handler.bias(layer) is None and
                              not _bias_can_be_added(layer) and
                              np.any(folded != 0)):
      # Zero padding: the constant inputs' contribution changes at the
      # borders (or there is no bias to fold it into), so those inputs stay.
      needed = ~source.live & (source.value != 0) & reach[:, ~constant |
                                                           (folded != 0)].any(1)
      return None, None, needed
    live = forced | reach[source.live].any(axis=0)
    if not live.any():
      live[0] = True  # a layer keeps at least one channel
    bias = handler.bias(layer)
    bias = bias.numpy() if bias is not None else 0.0
    activation = getattr(layer, 'activation', None) or (lambda x: x)
    value = np.asarray(activation(tf.constant(
        (folded + bias)[None], tf.float32)))[0]
    return _Channels(live, np.where(live, 0.0, value)), folded, None


def _bias_can_be_added(layer) -> bool:
  """Whether the layer's config can switch a bias on (Dense, convolutions)."""
  return 'use_bias' in layer.get_config()


def remove_channels(model):
  """A smaller dense copy of `model` without its constant channels.

  Returns:
    (small model, {layer name: (channels before, channels after)} for every
     layer that makes channels). The small model computes what `model`
     does, within float32 rounding.
  """
  check_supported(model)
  graph = channel_graph.ChannelGraph(model)
  plan = _Surgeon(graph).plan()
  producers = [call for call in graph.calls if call.kind == PRODUCE]
  live = {call.path: plan.channels[call.outputs[0]].live for call in producers}
  cut_calls = {call.path: call for call in graph.calls
               if call.kind in (PRODUCE, CHANNELWISE)}
  needs_bias = {path for path, (_, folded) in plan.producers.items()
                if np.any(folded[live[path]] != 0)}
  by_layer = {id(call.layer): call for call in producers}
  clone_model = keras_compat.keras_of(model).models.clone_model

  def clone_layer(layer):
    if keras_compat.is_model(layer):
      return clone_model(layer, clone_function=clone_layer)
    config = layer.get_config()
    call = by_layer.get(id(layer))
    if call is not None:
      config[call.handler.width_argument] = int(live[call.path].sum())
      if call.path in needs_bias:
        config['use_bias'] = True
    return layer.__class__.from_config(config)

  small = clone_model(model, clone_function=clone_layer)
  for (path, layer), (_, copy) in zip(weights_lib.layers_with_paths(model),
                                      weights_lib.layers_with_paths(small)):
    weights = layer.get_weights()
    call = cut_calls.get(path)
    if call is not None:
      weights = _cut_weights(call, weights, plan, live, path in needs_bias)
    copy.set_weights(weights)
  widths = {call.layer.name: (len(live[call.path]),
                              int(live[call.path].sum()))
            for call in producers}
  return small, widths


def checked_difference(model, small, inputs) -> float:
  """The largest |small(x) - model(x)| over `inputs`.

  Raises:
    RuntimeError: beyond float32 rounding, which would be a bug here.
  """
  expected = model.predict(inputs, verbose=0)
  difference = float(np.max(np.abs(small.predict(inputs, verbose=0) -
                                    expected)))
  if difference > 1e-4 * (1 + np.max(np.abs(expected))):
    raise RuntimeError(f'Channel surgery changed the outputs of '
                       f'{model.name!r} by {difference:g}; this is a bug in '
                       'tf_admm.')
  return difference


def _cut_weights(call, weights, plan: _Plan, live, add_bias: bool) -> list:
  """The weights of the layer of `call` for the kept channels."""
  if call.kind == CHANNELWISE:
    kept = plan.channels[call.outputs[0]].live
    return call.handler.cut(call.layer, weights, kept, kept)
  inputs, folded = plan.producers[call.path]
  if add_bias and call.handler.bias(call.layer) is None:
    weights = weights[:1] + [np.zeros(len(folded), np.float32)] + weights[1:]
  if call.handler.bias(call.layer) is not None or add_bias:
    weights[1] = (weights[1] + folded).astype(np.float32)
  return call.handler.cut(call.layer, weights, inputs, live[call.path])


def silence_pruned_channels(model) -> dict:
  """Holds at 0, after every optimizer step, the bias of each output channel
  whose kernel is all zero, and the scale and shift of the
  BatchNormalization that normalizes it (through weightless channel-wise
  layers), so the channel outputs exactly 0 after activations with f(0) = 0.

  `model` may hold tfmot pruning wrappers (masked retraining). Returns
  {layer name: channels silenced}.
  """
  graph = channel_graph.ChannelGraph(model)
  silenced = {}
  for call in graph.calls:
    if call.kind != PRODUCE:
      continue
    producer = call.layer
    kernel = call.handler.kernel(producer).numpy()
    alive = kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
    if alive.all():
      continue
    bias = call.handler.bias(producer)
    variables = [bias] if bias is not None else []
    key = call.outputs[0]
    while True:
      following = graph.readers.get(key, [])
      if len(following) != 1 or following[0].kind != CHANNELWISE:
        break
      follower = following[0]
      if isinstance(follower.handler, channel_handlers.Normalization):
        variables += [v for v in (follower.layer.gamma, follower.layer.beta)
                      if v is not None]
        break
      if follower.layer.weights:  # a depthwise convolution: its own channels
        break
      key = follower.outputs[0]
    keep = alive.astype(np.float32)
    for variable in variables:
      variable.assign(variable.numpy() * keep)
      masks_lib.hold_mask(variable, tf.constant(keep))
    silenced[producer.name] = int((~alive).sum())
  return silenced
