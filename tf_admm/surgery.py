"""Cutting pruned channels out: a smaller dense model computing the same.

A channel whose kernel slice is zero (`tf_admm.constraints.KeepChannels`)
outputs a constant: its activation of the bias, carried on through
BatchNormalization, activations and pooling. `remove_channels` finds every
channel that is constant over all positions, removes it from the layer that
makes it and from every layer that reads it (through channel-wise layers,
Flatten's channels-last layout, Add and Concatenate), and folds its constant
into the biases of the Dense and convolution layers that read it.
A channel stays where removing it would change the output:
- a zero-padded convolution reads a nonzero constant (the padding makes
  its contribution differ at the borders);
- it is added (`Add`) to a channel that stays: added channels stay or go
  together;
- it is one of the model's outputs, or the last channel of its layer.

Supported are Sequential and functional models of the layers in
`SUPPORTED`, channels last, with fixed input sizes, no nested models and no
shared layers; `check_supported` names what is not, before any training.

`silence_pruned_channels` makes pruned channels output exactly 0 during
masked retraining (their biases and BatchNormalization scale and shift held
at 0), so that zero-padded convolutions and residual blocks can lose them
too.
"""

import dataclasses
from typing import Dict, List

import numpy as np
import tensorflow as tf

from tf_admm import attach
from tf_admm import keras_compat
from tf_admm import macs
from tf_admm import masks as masks_lib
from tf_admm import weights as weights_lib
from tf_admm.keras_compat import inbound_node_count
from tf_admm.keras_compat import is_model
from tf_admm.keras_compat import keras

layers = keras.layers

# Layers that make new channels from all of their input's channels.
PRODUCERS = (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D)
# Layers whose output channel c depends on input channel c alone.
CHANNELWISE = (
    layers.BatchNormalization, layers.DepthwiseConv1D,
    layers.DepthwiseConv2D, layers.Activation, layers.ReLU, layers.LeakyReLU,
    layers.ELU, layers.Dropout, layers.SpatialDropout1D,
    layers.SpatialDropout2D, layers.GaussianNoise, layers.GaussianDropout,
    layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
    layers.AveragePooling1D, layers.AveragePooling2D,
    layers.AveragePooling3D, layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D, layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D, layers.ZeroPadding1D, layers.ZeroPadding2D,
    layers.UpSampling1D, layers.UpSampling2D, layers.Cropping1D,
    layers.Cropping2D)
# Layers that need every input channel (they mix channels, not linearly).
MIXING = (layers.Softmax,)
OTHERS = (layers.InputLayer, layers.Flatten, layers.Add, layers.Concatenate)
SUPPORTED = PRODUCERS + CHANNELWISE + MIXING + OTHERS

# A channel is constant if it varies over positions by less than this,
# relative to its size: float32 rounding, far below any real variation.
_CONSTANT_TOLERANCE = 1e-5


def _inputs(layer) -> list:
  if isinstance(layer, layers.InputLayer):
    return []
  inputs = layer.input
  return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _mixes_channels(layer) -> bool:
  """Whether `layer` needs every input channel: a Softmax, or a layer whose
  activation is softmax."""
  return isinstance(layer, MIXING) or (
      getattr(layer, 'activation', None) is keras.activations.softmax)


def _channels_last(layer) -> bool:
  """Whether a layer with an `axis` (BatchNormalization, Concatenate) works
  along the last one, the channels."""
  axes = np.atleast_1d(layer.axis)
  rank = len(layer.output_shape)
  return len(axes) == 1 and axes[0] % rank == rank - 1


def _own_copy(model):
  """A clone of `model` holding its weights, whose layers belong to this
  graph alone (a stripped model's layers were also called inside the
  pruning wrappers)."""
  return attach.clone_with(model, lambda layer, config: config)


def check_supported(model) -> None:
  """Raises ValueError naming every layer surgery cannot handle."""
  _check_keras2(model)
  _check_graph(_own_copy(model))


def _check_keras2(model) -> None:
  weights_lib.check_cloneable(model)
  keras_compat.require_keras2(model, 'Channel surgery')


def _check_graph(model) -> None:
  problems = []
  for layer in model.layers:
    name = f'{layer.name} ({type(layer).__name__})'
    if is_model(layer):
      problems.append(f'{name}: a nested model (flatten it into one)')
    elif type(layer) not in SUPPORTED:  # pylint: disable=unidiomatic-typecheck
      problems.append(f'{name}: not a supported layer')
    elif inbound_node_count(layer) > 1:
      problems.append(f'{name}: shared by several calls')
    elif getattr(layer, 'data_format', 'channels_last') != 'channels_last':
      problems.append(f'{name}: channels first')
    elif getattr(layer, 'padding', None) == 'causal':
      problems.append(f'{name}: causal padding')
    elif isinstance(layer, PRODUCERS) and getattr(layer, 'groups', 1) != 1:
      problems.append(f'{name}: grouped convolution')
    elif getattr(layer, 'depth_multiplier', 1) != 1:
      problems.append(f'{name}: depth_multiplier other than 1')
    elif (isinstance(layer, (layers.BatchNormalization, layers.Concatenate))
          and not _channels_last(layer)):
      problems.append(f'{name}: works along axis {layer.axis}, not channels')
    else:
      unknown = [t.shape for t in _inputs(layer) if None in t.shape[1:]]
      if unknown:
        problems.append(f'{name}: input of unknown size {unknown[0]}')
  if problems:
    raise ValueError(
        f'Channel surgery cannot handle model {model.name!r}: '
        + '; '.join(problems) + '. Supported are Sequential and functional '
        'models of ' + ', '.join(sorted({t.__name__ for t in SUPPORTED})) +
        '.')


@dataclasses.dataclass
class _Channels:
  """What is known of one tensor's channels (its last axis)."""
  live: np.ndarray  # bool: varies over positions or examples; stays
  value: np.ndarray  # the constant of each channel that is not live


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


def _linear_response(layer, x) -> np.ndarray:
  """A Dense or convolution layer's kernel applied to `x` (no bias, no
  activation)."""
  kernel = layer.kernel
  if isinstance(layer, layers.Dense):
    return np.tensordot(x, kernel.numpy(), axes=1)
  return layer.convolution_op(tf.constant(x), kernel).numpy()


@dataclasses.dataclass
class _Plan:
  channels: Dict[int, _Channels]  # by id of the tensor
  # Per producer: (live inputs, folded constant per output channel).
  producers: Dict[str, tuple]


class _Surgeon:
  """Finds which channels stay: a forward pass over the layers computes
  which are constant; whatever must stay for the output to be exact is
  forced live, back to the layer that makes it, and the pass repeats until
  nothing more is forced."""

  def __init__(self, model):
    self.model = model
    self.layers = [layer for layer in model.layers
                   if not isinstance(layer, layers.InputLayer)]
    self.made_by = {id(layer.output): layer for layer in self.layers}
    self.forced = {}  # id(tensor): bool array

  def _force(self, tensor, channels) -> bool:
    """Forces `channels` (bool) of `tensor` live, and whatever they need
    upstream; returns whether anything was new."""
    current = self.forced.setdefault(id(tensor),
                                     np.zeros(tensor.shape[-1], bool))
    new = channels & ~current
    if not new.any():
      return False
    current |= new
    layer = self.made_by.get(id(tensor))  # None: a model input
    if isinstance(layer, CHANNELWISE):
      self._force(_inputs(layer)[0], current)
    elif isinstance(layer, layers.Flatten):
      source = _inputs(layer)[0]
      self._force(source, current.reshape(-1, source.shape[-1]).any(axis=0))
    elif isinstance(layer, layers.Add):
      for source in _inputs(layer):
        self._force(source, current)
    elif isinstance(layer, layers.Concatenate):
      start = 0
      for source in _inputs(layer):
        width = source.shape[-1]
        self._force(source, current[start:start + width])
        start += width
    return True

  def _forced(self, tensor):
    return self.forced.get(id(tensor), np.zeros(tensor.shape[-1], bool))

  def plan(self) -> _Plan:
    for output in self.model.outputs:
      self._force(output, np.ones(output.shape[-1], bool))
    while True:
      plan = self._forward()
      if plan is not None:
        return plan

  def _forward(self):
    """One pass; None when it forced something new (the pass repeats)."""
    channels = {id(tensor): _Channels(np.ones(tensor.shape[-1], bool),
                                      np.zeros(tensor.shape[-1]))
                for tensor in self.model.inputs}
    producers, changed = {}, False
    for layer in self.layers:
      output = layer.output
      forced = self._forced(output)
      sources = [channels[id(t)] for t in _inputs(layer)]
      mixing = _mixes_channels(layer)
      if isinstance(layer, PRODUCERS):
        if mixing:  # softmax over its outputs: they all stay
          forced = np.ones(output.shape[-1], bool)
        state, folded, needed = self._producer(layer, sources[0], forced)
        if needed is not None:
          changed |= self._force(layer.input, needed)
          width = output.shape[-1]  # stands in until the pass repeats
          state, folded = _Channels(np.ones(width, bool),
                                    np.zeros(width)), np.zeros(width)
        producers[layer.name] = (sources[0].live, folded)
      elif mixing:
        state = _Channels(np.ones(output.shape[-1], bool),
                          np.zeros(output.shape[-1]))
      elif isinstance(layer, CHANNELWISE):
        example = _constant_example(layer.input_shape, sources[0])
        constant, value = _per_channel(layer(example, training=False))
        state = _Channels(sources[0].live | ~constant | forced, value)
      elif isinstance(layer, layers.Flatten):
        repeats = int(np.prod(layer.input_shape[1:-1]))
        state = _Channels(np.tile(sources[0].live, repeats) | forced,
                          np.tile(sources[0].value, repeats))
      elif isinstance(layer, layers.Add):
        state = _Channels(np.logical_or.reduce([s.live for s in sources])
                          | forced, np.sum([s.value for s in sources], 0))
      else:  # Concatenate
        state = _Channels(np.concatenate([s.live for s in sources]) | forced,
                          np.concatenate([s.value for s in sources]))
      state.value = np.where(state.live, 0.0, state.value)
      if mixing and not isinstance(layer, PRODUCERS):
        changed |= self._force(layer.input, np.ones(layer.input.shape[-1],
                                                    bool))
      elif not isinstance(layer, PRODUCERS):
        # A channel that stays needs the channels it is computed from.
        changed |= self._force(output, state.live)
      channels[id(output)] = state
    return None if changed else _Plan(channels, producers)

  def _producer(self, layer, source: _Channels, forced):
    """(output channels, folded constants, inputs that must stay or None)."""
    kernel = layer.kernel.numpy()
    reach = np.abs(kernel).reshape(-1, *kernel.shape[-2:]).max(axis=0) > 0
    response = _linear_response(
        layer, _constant_example(layer.input_shape, source))
    constant, folded = _per_channel(response)
    if not constant.all():
      # Zero padding: the constant inputs' contribution changes at the
      # borders, so those inputs stay.
      needed = ~source.live & (source.value != 0) & reach[:, ~constant].any(1)
      return None, None, needed
    live = forced | reach[source.live].any(axis=0)
    if not live.any():
      live[0] = True  # a layer keeps at least one channel
    bias = layer.bias.numpy() if layer.use_bias else 0.0
    value = np.asarray(layer.activation(tf.constant(
        (folded + bias)[None], tf.float32)))[0]
    return _Channels(live, np.where(live, 0.0, value)), folded, None


def remove_channels(model):
  """A smaller dense copy of `model` without its constant channels.

  Returns:
    (small model, {layer name: (channels before, channels after)} for every
     layer that makes channels). The small model computes what `model`
     does, within float32 rounding.
  """
  _check_keras2(model)
  model = _own_copy(model)
  _check_graph(model)
  plan = _Surgeon(model).plan()
  live = {layer.name: plan.channels[id(layer.output)].live
          for layer in model.layers if not isinstance(layer,
                                                        layers.InputLayer)}
  needs_bias = {name for name, (_, folded) in plan.producers.items()
                if np.any(folded[live[name]] != 0)}

  def clone_layer(layer):
    config = layer.get_config()
    if isinstance(layer, PRODUCERS):
      config[macs.width_attribute(layer)] = int(live[layer.name].sum())
      if layer.name in needs_bias:
        config['use_bias'] = True
    return layer.__class__.from_config(config)

  small = keras.models.clone_model(model, clone_function=clone_layer)
  for layer in model.layers:
    weights = _cut_weights(layer, plan, live)
    if weights:
      small.get_layer(layer.name).set_weights(weights)
  widths = {layer.name: (len(live[layer.name]), int(live[layer.name].sum()))
            for layer in model.layers if isinstance(layer, PRODUCERS)}
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


def _cut_weights(layer, plan: _Plan, live) -> List[np.ndarray]:
  """The weights of `layer` for the kept channels (none for layers
  without weights)."""
  kept = live.get(layer.name)  # None for an input layer
  if isinstance(layer, PRODUCERS):
    inputs, folded = plan.producers[layer.name]
    kernel = layer.kernel.numpy()[..., inputs, :][..., kept]
    bias = (layer.bias.numpy() if layer.use_bias else 0.0) + folded
    if layer.use_bias or np.any(folded[kept] != 0):
      return [kernel, bias[kept].astype(np.float32)]
    return [kernel]
  if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
    weights = layer.get_weights()
    return [weights[0][..., kept, :]] + [w[kept] for w in weights[1:]]
  if isinstance(layer, layers.BatchNormalization):
    return [w[kept] for w in layer.get_weights()]
  return []


def _readers(model) -> dict:
  """{layer name: [names of the layers reading its output]}, from the
  model's config (the wrapped model of masked retraining calls its layers
  more than once, so their `output` is ambiguous)."""
  config = model.get_config()
  readers = {}
  if isinstance(model, keras.Sequential):
    names = [layer['config']['name'] for layer in config['layers']]
    for before, after in zip(names, names[1:]):
      readers[before] = [after]
    return readers
  for layer in config['layers']:
    for node in layer['inbound_nodes']:
      for source in node:
        readers.setdefault(source[0], []).append(layer['name'])
  return readers


def silence_pruned_channels(model) -> dict:
  """Holds at 0, after every optimizer step, the bias of each output channel
  whose kernel is all zero, and the scale and shift of the
  BatchNormalization that normalizes it (through weightless channel-wise
  layers), so the channel outputs exactly 0 after activations with f(0) = 0.

  `model` may hold tfmot pruning wrappers (masked retraining). Returns
  {layer name: channels silenced}.
  """
  _check_keras2(model)
  readers = _readers(model)
  silenced = {}
  for layer in model.layers:
    producer = getattr(layer, 'layer', layer)  # inside a pruning wrapper
    if not isinstance(producer, PRODUCERS):
      continue
    kernel = producer.kernel.numpy()
    alive = kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
    if alive.all():
      continue
    keep = tf.constant(alive.astype(np.float32))
    variables = [producer.bias] if producer.use_bias else []
    follower = layer
    while True:
      following = readers.get(follower.name, [])
      if len(following) != 1 or not isinstance(
          model.get_layer(following[0]), CHANNELWISE):
        break
      follower = model.get_layer(following[0])
      if isinstance(follower, layers.BatchNormalization):
        variables += [v for v in (follower.gamma, follower.beta)
                      if v is not None]
        break
      if follower.weights:  # a depthwise convolution: its own channels
        break
    for variable in variables:
      variable.assign(variable * keep)
      masks_lib.hold_mask(variable, keep)
    silenced[producer.name] = int((~alive).sum())
  return silenced
