"""Multiply-accumulates (MACs) per inference, and channel counts that reach a
MAC budget, for models of either Keras.

Latency follows MACs, not nonzero weights: a pruned channel saves its own
layer's work and the next layer's. Counted are the products of Dense layers
and convolutions (standard, depthwise, separable, transposed) for one
example (`tf_admm.channel_handlers`, read through the channel graph);
normalization, pooling and activations are not counted (a few percent at
most in these networks).
"""

from typing import Mapping

import numpy as np

from tf_admm import channel_graph
from tf_admm import channel_handlers
from tf_admm import keras_compat
from tf_admm import weights as weights_lib


def model_macs(model) -> dict:
  """{'total': MACs, 'layers': {layer path: MACs}} for one example (layers
  of nested models included; uncounted layers left out)."""
  return channel_graph.ChannelGraph(model).macs()


def with_channels(model, channels: Mapping[str, int]):
  """An untrained copy of `model` whose named layers have `channels` output
  channels (units or filters): the architecture surgery would leave."""
  names = {layer.name for _, layer in weights_lib.layers_with_paths(model)}
  unknown = sorted(set(channels) - names)
  if unknown:
    raise ValueError(f'Channel counts are given for {", ".join(unknown)}, '
                     f'which are not layers of {model.name!r}.')
  clone_model = keras_compat.keras_of(model).models.clone_model

  def clone_layer(layer):
    if keras_compat.is_model(layer):
      return clone_model(layer, clone_function=clone_layer)
    config = layer.get_config()
    if layer.name in channels:
      config[channel_handlers.width_argument(layer)] = int(
          channels[layer.name])
    return layer.__class__.from_config(config)

  return clone_model(model, clone_function=clone_layer)


def _widths(graph, names) -> dict:
  """{layer name: output channels} of the named layers, which must make
  channels the graph can cut."""
  widths = {}
  for name in names:
    call = next((c for c in graph.calls if c.layer.name == name), None)
    if call is None or call.kind != channel_handlers.PRODUCE:
      kind = type(call.layer).__name__ if call else 'not a layer'
      raise ValueError(f'{name!r} is a {kind}; channel targets apply to Dense '
                       'and convolution layers whose channels can be cut.')
    widths[name] = graph.output_shape(call)[-1]
  return widths


def tie_counts(graph, counts: Mapping[str, int]) -> dict:
  """`counts` ({layer name: channels}) with the producers of each channel
  group at one count, the largest asked of the group (an Add needs its
  inputs alike), and layers of the group not named included."""
  tied = dict(counts)
  paths = {call.path: call.layer.name for call in graph.calls}
  for group in graph.groups:
    names = [paths[p] for p in group.producers]
    asked = [counts[n] * group.width // len(group.index[p])
             for p, n in zip(group.producers, names) if n in counts]
    if len(names) > 1 and asked:
      tied.update(dict.fromkeys(names, max(asked)))
  return tied


def _within_budget(model, graph, counts_at, low, high, factor) -> dict:
  """{layer name: kept channels / channels} at the largest parameter in
  [low, high] whose `counts_at(parameter)` ({layer: channels}, growing with
  it) leaves at most 1/factor of the MACs of `model`, whose channel graph
  is `graph`."""
  if not factor >= 1:
    raise ValueError(f'A MAC target is a factor >= 1 (5 means 5x fewer MACs),'
                     f' got {factor}.')
  budget = graph.macs()['total'] / factor

  def macs(parameter):
    return model_macs(with_channels(model, tie_counts(
        graph, counts_at(parameter))))['total']

  if macs(low) > budget:
    raise ValueError(f'{factor:g}x fewer MACs is out of reach by pruning '
                     f'{", ".join(counts_at(low))}: one channel each leaves '
                     f'{macs(low):,} of the budget of {budget:,.0f}.')
  for _ in range(20):  # to a millionth of the range: finer than a channel
    middle = (low + high) / 2
    low, high = (middle, high) if macs(middle) <= budget else (low, middle)
  widths = _widths(graph, counts_at(low))
  return {name: count / widths[name] for name, count in counts_at(low).items()}


def keep_ratios_for_macs(model, profile: Mapping[str, float],
                         factor: float) -> dict:
  """{layer name: kept channels / channels}: `profile` (relative keep
  ratios of the layers to prune) scaled by one factor, as far as a model
  with `factor` times fewer MACs than `model` allows.

  Each ratio is a whole number of channels over the layer's channels, at
  least one channel; the MACs of the result are at most total / factor.
  """
  graph = channel_graph.ChannelGraph(model)
  widths = _widths(graph, profile)

  def counts_at(scale):
    return {n: int(np.clip(np.floor(scale * profile[n] * widths[n] + 1e-9), 1,
                           widths[n])) for n in profile}

  return _within_budget(model, graph, counts_at, 0.0,
                        1.0 / min(profile.values()), factor)


def keep_ratios_by_norm(model, names, factor: float) -> dict:
  """{layer name: kept channels / channels} for the named layers, chosen by
  one threshold over every channel's L2 norm relative to the root mean
  square of its layer's channel norms, as low as `factor` times fewer MACs
  allows (a layer keeps at least one channel)."""
  graph = channel_graph.ChannelGraph(model)
  widths = _widths(graph, names)
  scores = {}
  for name in names:
    kernel = model.get_layer(name).kernel.numpy()
    norms = np.sqrt(np.sum(kernel.reshape(-1, kernel.shape[-1])**2, axis=0))
    scores[name] = norms / max(np.sqrt(np.mean(norms**2)), 1e-30)
  top = max(float(s.max()) for s in scores.values())

  def counts_at(lowered):  # the threshold is top - lowered
    return {n: int(np.clip(np.sum(scores[n] >= top - lowered), 1, widths[n]))
            for n in names}

  return _within_budget(model, graph, counts_at, 0.0, top, factor)
