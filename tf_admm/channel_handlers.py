"""How each layer class relates its output channels to its input channels.

A handler per layer class (matched exactly, on either Keras), as
Torch-Pruning's dependency graph has one per layer type. Its `kind` says how
the channel graph (`tf_admm.channel_graph`) ties channels through the layer:

  PRODUCE      new channels, each from all input channels (Dense,
               convolutions): the channels pruning removes whole;
  CHANNELWISE  output channel c from input channel c alone (normalization,
               depthwise convolution, activations, pooling, padding);
  MERGE        elementwise over inputs of one width (Add, Multiply, ...):
               channel c of each input and of the output are one channel;
  CONCATENATE  the inputs' channels one after another;
  FLATTEN      channels-last positions unrolled: feature p * C + c is
               channel c;
  OPAQUE       anything else: it reads every input channel, and its output
               channels are its own; neither side is ever cut.

A layer in a configuration its kind cannot cut (a grouped or channels-first
convolution, a normalization over another axis) is OPAQUE. A handler also
counts the layer's multiply-accumulates and cuts its weights to the kept
channels. `register_channel_handler` adds one for a user's layer class.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from tf_admm.keras_compat import keras
from tf_admm.keras_compat import keras3

PRODUCE = 'produce'
CHANNELWISE = 'channelwise'
MERGE = 'merge'
CONCATENATE = 'concatenate'
FLATTEN = 'flatten'
OPAQUE = 'opaque'


def positions(shape) -> int:
  """Spatial positions of a channels-last shape (batch first)."""
  return int(np.prod(shape[1:-1], dtype=np.int64))


def _channels_last(layer) -> bool:
  return getattr(layer, 'data_format', 'channels_last') in (
      'channels_last', None)


def mixes_channels(layer) -> bool:
  """Whether `layer`'s activation mixes channels (softmax)."""
  return getattr(layer, 'activation', None) in (keras.activations.softmax,
                                                keras3.activations.softmax)


def _last_axis(layer, rank: int) -> bool:
  """Whether a layer's `axis` (normalization, concatenation) is the last."""
  axes = np.atleast_1d(layer.axis)
  return len(axes) == 1 and int(axes[0]) % rank == rank - 1


class Handler:
  """An OPAQUE layer: kept whole, counted as no MACs. Subclasses override
  `kind`, `fits`, `macs` and `cut`."""

  kind = OPAQUE

  def fits(self, layer, input_shapes) -> bool:
    """Whether `layer`, read at `input_shapes`, works as `kind` says
    (otherwise the graph treats it as OPAQUE)."""
    del layer, input_shapes
    return True

  def kind_of(self, layer, input_shapes) -> str:
    return self.kind if self.fits(layer, input_shapes) else OPAQUE

  def macs(self, layer, input_shapes, output_shape) -> int:
    del layer, input_shapes, output_shape
    return 0

  def cut(self, layer, weights, inputs_kept, outputs_kept) -> list:
    """`weights` (the layer's `get_weights()`) for the kept input and output
    channels (bool arrays)."""
    del layer, inputs_kept, outputs_kept
    return weights


class Channelwise(Handler):
  """A layer without weights whose channel c reads input channel c."""

  kind = CHANNELWISE

  def fits(self, layer, input_shapes):
    return _channels_last(layer) and not mixes_channels(layer)


class Normalization(Channelwise):
  """BatchNormalization: every weight is one value per channel."""

  def fits(self, layer, input_shapes):
    return _last_axis(layer, len(input_shapes[0]))

  def cut(self, layer, weights, inputs_kept, outputs_kept):
    return [w[outputs_kept] for w in weights]


class Depthwise(Channelwise):
  """A depthwise convolution with depth_multiplier 1: kernel (..., C, 1),
  bias (C,)."""

  def fits(self, layer, input_shapes):
    return (super().fits(layer, input_shapes) and
            layer.depth_multiplier == 1)

  def macs(self, layer, input_shapes, output_shape):
    return (positions(output_shape) * int(np.prod(layer.kernel_size)) *
            input_shapes[0][-1] * layer.depth_multiplier)

  def cut(self, layer, weights, inputs_kept, outputs_kept):
    kernel, *rest = weights
    return [kernel[..., outputs_kept, :]] + [w[outputs_kept] for w in rest]


class Merge(Handler):
  kind = MERGE

  def fits(self, layer, input_shapes):
    return len({shape[-1] for shape in input_shapes}) == 1


class Concatenate(Handler):
  kind = CONCATENATE

  def fits(self, layer, input_shapes):
    return _last_axis(layer, len(input_shapes[0]))


class Flatten(Handler):
  kind = FLATTEN

  def fits(self, layer, input_shapes):
    return _channels_last(layer)


class Producer(Handler):
  """A layer making `width_argument` new channels from all its inputs
  through a kernel (..., inputs, outputs), and a bias of one value per
  output channel if it has one. Subclasses give `macs` and `respond`."""

  kind = PRODUCE

  def __init__(self, width_argument: str):
    self.width_argument = width_argument

  def kernel(self, layer):
    return layer.kernel

  def bias(self, layer):
    """The bias variable, or None."""
    return layer.bias if getattr(layer, 'use_bias', False) else None

  def respond(self, layer, x) -> np.ndarray:
    """The kernel applied to `x` (a batch), without bias or activation."""
    raise NotImplementedError

  def mixes_outputs(self, layer) -> bool:
    """Whether the layer's activation mixes its outputs (softmax), so that
    none of them can go."""
    return mixes_channels(layer)

  def cut(self, layer, weights, inputs_kept, outputs_kept):
    kernel, *rest = weights
    kernel = kernel[..., inputs_kept, :][..., outputs_kept]
    return [kernel] + [w[outputs_kept] for w in rest]


class DenseHandler(Producer):

  def __init__(self):
    super().__init__('units')

  def macs(self, layer, input_shapes, output_shape):
    return (positions(input_shapes[0]) * input_shapes[0][-1] *
            output_shape[-1])

  def respond(self, layer, x):
    return np.tensordot(x, layer.kernel.numpy(), axes=1)


class Convolution(Producer):

  def __init__(self):
    super().__init__('filters')

  def fits(self, layer, input_shapes):
    return (_channels_last(layer) and getattr(layer, 'groups', 1) == 1 and
            layer.padding != 'causal')

  def macs(self, layer, input_shapes, output_shape):
    return (positions(output_shape) * int(np.prod(layer.kernel_size)) *
            (input_shapes[0][-1] // getattr(layer, 'groups', 1)) *
            output_shape[-1])

  def respond(self, layer, x):
    return np.asarray(layer.convolution_op(tf.constant(x), layer.kernel))


class Counted(Handler):
  """An OPAQUE layer whose MACs are counted: `count(layer, input_shapes,
  output_shape)`."""

  def __init__(self, count):
    self.count = count

  def macs(self, layer, input_shapes, output_shape):
    return self.count(layer, input_shapes, output_shape)


def _transposed_macs(layer, input_shapes, output_shape):
  return (positions(input_shapes[0]) * int(np.prod(layer.kernel_size)) *
          input_shapes[0][-1] * output_shape[-1])


def _separable_macs(layer, input_shapes, output_shape):
  depthwise = input_shapes[0][-1] * layer.depth_multiplier
  return positions(output_shape) * depthwise * (
      int(np.prod(layer.kernel_size)) + output_shape[-1])


def _handlers(layers) -> dict:
  """{layer class: handler} for one Keras's `layers` module."""
  found = {layers.Dense: DenseHandler()}
  convolution = Convolution()
  found.update(dict.fromkeys((layers.Conv1D, layers.Conv2D, layers.Conv3D),
                             convolution))
  found.update(dict.fromkeys((layers.Conv2DTranspose, layers.Conv3DTranspose),
                             Counted(_transposed_macs)))
  found.update(dict.fromkeys((layers.SeparableConv1D, layers.SeparableConv2D),
                             Counted(_separable_macs)))
  found.update(dict.fromkeys((layers.DepthwiseConv1D, layers.DepthwiseConv2D),
                             Depthwise()))
  found[layers.BatchNormalization] = Normalization()
  channelwise = Channelwise()
  found.update(dict.fromkeys((
      layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU,
      layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D,
      layers.GaussianNoise, layers.GaussianDropout, layers.MaxPooling1D,
      layers.MaxPooling2D, layers.MaxPooling3D, layers.AveragePooling1D,
      layers.AveragePooling2D, layers.AveragePooling3D,
      layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D,
      layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D,
      layers.ZeroPadding1D, layers.ZeroPadding2D, layers.UpSampling1D,
      layers.UpSampling2D, layers.Cropping1D, layers.Cropping2D),
                             channelwise))
  found.update(dict.fromkeys((
      layers.Add, layers.Subtract, layers.Multiply, layers.Average,
      layers.Maximum, layers.Minimum), Merge()))
  found[layers.Concatenate] = Concatenate()
  found[layers.Flatten] = Flatten()
  return found


HANDLERS = {**_handlers(keras.layers), **_handlers(keras3.layers)}
_OPAQUE = Handler()


def handler_of(layer) -> Handler:
  """The handler of `layer`'s exact class (OPAQUE for unknown classes)."""
  return HANDLERS.get(type(layer), _OPAQUE)


def register_channel_handler(layer_class, handler: Handler) -> None:
  """Tells the channel graph how `layer_class` (matched exactly) treats
  channels: a `Handler` subclass instance, such as `Channelwise()` for a
  layer whose channel c reads input channel c alone and has no weights, or
  a `Producer` subclass giving `respond` and `macs` (its `cut` slices a
  kernel (..., inputs, outputs) and per-output-channel weights)."""
  if not isinstance(layer_class, type):
    raise TypeError(f'register_channel_handler takes a layer class, got '
                    f'{layer_class!r}.')
  if not isinstance(handler, Handler):
    raise TypeError(f'register_channel_handler takes a '
                    f'tf_admm.channel_handlers.Handler, got {handler!r}.')
  HANDLERS[layer_class] = handler


def width_argument(layer) -> Optional[str]:
  """The config key of a producer's output channels (None for others)."""
  return getattr(handler_of(layer), 'width_argument', None)
