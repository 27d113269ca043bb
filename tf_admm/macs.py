"""Multiply-accumulates (MACs) per inference, and channel counts that reach a
MAC budget, for Keras 2 models.

Latency follows MACs, not nonzero weights: a pruned channel saves its own
layer's work and the next layer's. Counted are the products of Dense layers
and convolutions (standard, depthwise, separable, transposed) for one
example; normalization, pooling and activations are not counted (a few
percent at most in these networks).
"""

from typing import Mapping

import numpy as np

from tf_admm import keras_compat
from tf_admm import weights as weights_lib
from tf_admm.keras_compat import keras

layers = keras.layers

_CONVOLUTIONS = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
_TRANSPOSED = (layers.Conv2DTranspose, layers.Conv3DTranspose)
_DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
_SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)


def _positions(shape) -> int:
  """Spatial positions of a channels-last shape (batch first)."""
  return int(np.prod(shape[1:-1], dtype=np.int64))


def layer_macs(layer) -> int:
  """MACs of one call of `layer` on one example (0 for uncounted layers)."""
  # Transposed and separable convolutions subclass Conv: test them first.
  if isinstance(layer, _TRANSPOSED):
    kernel = int(np.prod(layer.kernel_size))
    return (_positions(layer.input_shape) * kernel *
            layer.input_shape[-1] * layer.filters)
  if isinstance(layer, _SEPARABLE):
    inputs, out = layer.input_shape[-1], layer.output_shape
    depthwise = _positions(out) * int(np.prod(layer.kernel_size)) * inputs * (
        layer.depth_multiplier)
    return depthwise + _positions(out) * inputs * layer.depth_multiplier * (
        layer.filters)
  if isinstance(layer, _DEPTHWISE):
    return (_positions(layer.output_shape) * int(np.prod(layer.kernel_size)) *
            layer.input_shape[-1] * layer.depth_multiplier)
  if isinstance(layer, _CONVOLUTIONS):
    return (_positions(layer.output_shape) * int(np.prod(layer.kernel_size)) *
            (layer.input_shape[-1] // layer.groups) * layer.filters)
  if isinstance(layer, layers.Dense):
    return _positions(layer.input_shape) * layer.input_shape[-1] * layer.units
  return 0


def model_macs(model) -> dict:
  """{'total': MACs, 'layers': {layer path: MACs}} for one example (layers
  of nested models included; uncounted layers left out)."""
  keras_compat.require_keras2(model, 'Counting MACs')
  counted = {path: layer_macs(layer)
             for path, layer in weights_lib.layers_with_paths(model)}
  counted = {path: n for path, n in counted.items() if n}
  return {'total': sum(counted.values()), 'layers': counted}


def width_attribute(layer) -> str:
  """The config key of a Dense or convolution layer's output channels."""
  return 'units' if isinstance(layer, layers.Dense) else 'filters'


def with_channels(model, channels: Mapping[str, int]):
  """An untrained copy of `model` whose named layers have `channels` output
  channels (units or filters): the architecture surgery would leave."""
  keras_compat.require_keras2(model, 'Counting MACs')
  names = {layer.name for layer in model.layers}
  unknown = sorted(set(channels) - names)
  if unknown:
    raise ValueError(f'Channel counts are given for {", ".join(unknown)}, '
                     f'which are not layers of {model.name!r}.')

  def clone_layer(layer):
    config = layer.get_config()
    if layer.name in channels:
      config[width_attribute(layer)] = int(channels[layer.name])
    return layer.__class__.from_config(config)

  return keras.models.clone_model(model, clone_function=clone_layer)


def _widths(model, names) -> dict:
  """{layer name: output channels} of the Dense and convolution layers
  named."""
  widths = {}
  for name in names:
    layer = model.get_layer(name)
    if not isinstance(layer, (layers.Dense,) + _CONVOLUTIONS):
      raise ValueError(f'{name!r} is a {type(layer).__name__}; channel targets '
                       'apply to Dense and convolution layers.')
    widths[name] = getattr(layer, width_attribute(layer))
  return widths


def _within_budget(model, counts_at, low, high, factor) -> dict:
  """{layer name: kept channels / channels} at the largest parameter in
  [low, high] whose `counts_at(parameter)` ({layer: channels}, growing with
  it) leaves at most 1/factor of the model's MACs."""
  if not factor >= 1:
    raise ValueError(f'A MAC target is a factor >= 1 (5 means 5x fewer MACs),'
                     f' got {factor}.')
  budget = model_macs(model)['total'] / factor

  def macs(parameter):
    return model_macs(with_channels(model, counts_at(parameter)))['total']

  if macs(low) > budget:
    raise ValueError(f'{factor:g}x fewer MACs is out of reach by pruning '
                     f'{", ".join(counts_at(low))}: one channel each leaves '
                     f'{macs(low):,} of the budget of {budget:,.0f}.')
  for _ in range(20):  # to a millionth of the range: finer than a channel
    middle = (low + high) / 2
    low, high = (middle, high) if macs(middle) <= budget else (low, middle)
  widths = _widths(model, counts_at(low))
  return {name: count / widths[name] for name, count in counts_at(low).items()}


def keep_ratios_for_macs(model, profile: Mapping[str, float],
                         factor: float) -> dict:
  """{layer name: kept channels / channels}: `profile` (relative keep
  ratios of the layers to prune) scaled by one factor, as far as a model
  with `factor` times fewer MACs than `model` allows.

  Each ratio is a whole number of channels over the layer's channels, at
  least one channel; the MACs of the result are at most total / factor.
  """
  keras_compat.require_keras2(model, 'Counting MACs')
  widths = _widths(model, profile)

  def counts_at(scale):
    return {n: int(np.clip(np.floor(scale * profile[n] * widths[n] + 1e-9), 1,
                           widths[n])) for n in profile}

  return _within_budget(model, counts_at, 0.0, 1.0 / min(profile.values()),
                        factor)


def keep_ratios_by_norm(model, names, factor: float) -> dict:
  """{layer name: kept channels / channels} for the named layers, chosen by
  one threshold over every channel's L2 norm relative to the root mean
  square of its layer's channel norms, as low as `factor` times fewer MACs
  allows (a layer keeps at least one channel)."""
  keras_compat.require_keras2(model, 'Counting MACs')
  widths = _widths(model, names)
  scores = {}
  for name in names:
    kernel = model.get_layer(name).kernel.numpy()
    norms = np.sqrt(np.sum(kernel.reshape(-1, kernel.shape[-1])**2, axis=0))
    scores[name] = norms / max(np.sqrt(np.mean(norms**2)), 1e-30)
  top = max(float(s.max()) for s in scores.values())

  def counts_at(lowered):  # the threshold is top - lowered
    return {n: int(np.clip(np.sum(scores[n] >= top - lowered), 1, widths[n]))
            for n in names}

  return _within_budget(model, counts_at, 0.0, top, factor)
