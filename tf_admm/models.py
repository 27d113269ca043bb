"""The reference networks of the ADMM pruning papers, for MNIST-sized input,
and two deeper ones for channel pruning."""

from tf_admm import keras_compat
from tf_admm import weights as weights_lib

# Each builder takes the Keras module to build with (Keras 2 by default).


def lenet5(input_shape=(28, 28, 1), num_classes=10,
           keras=keras_compat.keras):
  """LeNet-5 as in the papers: conv 20@5x5, conv 50@5x5, fc 500, fc 10."""
  layers = keras.layers
  return keras.Sequential([
      keras.Input(input_shape),
      layers.Conv2D(20, 5, activation='relu', name='conv1'),
      layers.MaxPooling2D(name='pool1'),
      layers.Conv2D(50, 5, activation='relu', name='conv2'),
      layers.MaxPooling2D(name='pool2'),
      layers.Flatten(name='flatten'),
      layers.Dense(500, activation='relu', name='fc1'),
      layers.Dense(num_classes, name='fc2'),
  ], name='lenet5')


def lenet300_100(input_shape=(28, 28, 1), num_classes=10,
                 keras=keras_compat.keras):
  """LeNet-300-100: fc 300, fc 100, fc 10."""
  layers = keras.layers
  return keras.Sequential([
      keras.Input(input_shape),
      layers.Flatten(name='flatten'),
      layers.Dense(300, activation='relu', name='fc1'),
      layers.Dense(100, activation='relu', name='fc2'),
      layers.Dense(num_classes, name='fc3'),
  ], name='lenet300_100')


def _conv_bn(layers, x, filters, kernel, name, activation='relu', **kwargs):
  x = layers.Conv2D(filters, kernel, padding='same', use_bias=False,
                    name=name, **kwargs)(x)
  x = layers.BatchNormalization(name=f'{name}_bn')(x)
  return layers.Activation(activation, name=f'{name}_act')(x) if (
      activation) else x


def vgg_small(input_shape=(28, 28, 1), num_classes=10,
              keras=keras_compat.keras):
  """A small VGG-style CNN with BatchNormalization on 32x32 inputs (28x28
  images are zero-padded inside): three blocks of two 3x3 convolutions
  (16, 32, 64 filters), each block max-pooled, then fc 128 and the
  output."""
  layers = keras.layers
  inputs = keras.Input(input_shape)
  x = layers.ZeroPadding2D((32 - input_shape[0]) // 2, name='pad')(inputs)
  for block, filters in enumerate((16, 32, 64), start=1):
    x = _conv_bn(layers, x, filters, 3, f'conv{block}a')
    x = _conv_bn(layers, x, filters, 3, f'conv{block}b')
    x = layers.MaxPooling2D(name=f'pool{block}')(x)
  x = layers.Flatten(name='flatten')(x)
  x = layers.Dense(128, activation='relu', name='fc1')(x)
  outputs = layers.Dense(num_classes, name='fc2')(x)
  return keras.Model(inputs, outputs, name='vgg_small')


def _inverted_residual(layers, x, expand, filters, stride, name):
  """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, 1x1 linear
  projection; the input added back when the shapes allow."""
  inputs = x
  x = _conv_bn(layers, x, expand, 1, f'{name}_expand', activation='relu6')
  x = layers.DepthwiseConv2D(3, strides=stride, padding='same',
                             use_bias=False, name=f'{name}_dw')(x)
  x = layers.BatchNormalization(name=f'{name}_dw_bn')(x)
  x = layers.Activation('relu6', name=f'{name}_dw_act')(x)
  x = _conv_bn(layers, x, filters, 1, f'{name}_project', activation=None)
  if stride == 1 and inputs.shape[-1] == filters:
    x = layers.Add(name=f'{name}_add')([inputs, x])
  return x


def mobilenet_v2_small(input_shape=(28, 28, 1), num_classes=10,
                       keras=keras_compat.keras):
  """A MobileNetV2-style network on 32x32 inputs (28x28 images zero-padded
  inside): a 3x3 stem of stride 2 (as MobileNetV2's), six inverted residual
  blocks (expansion 6; four with residual Adds), a 1x1 head, global pooling
  and the output."""
  layers = keras.layers
  inputs = keras.Input(input_shape)
  x = layers.ZeroPadding2D((32 - input_shape[0]) // 2, name='pad')(inputs)
  x = _conv_bn(layers, x, 16, 3, 'stem', activation='relu6', strides=2)
  for name, filters, stride in (('b1', 16, 1), ('b2', 24, 2), ('b3', 24, 1),
                                ('b4', 32, 2), ('b5', 32, 1), ('b6', 32, 1)):
    x = _inverted_residual(layers, x, 6 * x.shape[-1], filters, stride, name)
  x = _conv_bn(layers, x, 128, 1, 'head', activation='relu6')
  x = layers.GlobalAveragePooling2D(name='pool')(x)
  outputs = layers.Dense(num_classes, name='fc')(x)
  return keras.Model(inputs, outputs, name='mobilenet_v2_small')


MODELS = {'lenet5': lenet5, 'lenet300_100': lenet300_100,
          'vgg_small': vgg_small, 'mobilenet_v2_small': mobilenet_v2_small}


def build(name: str, input_shape=(28, 28, 1), num_classes=10,
          keras_version: int = 2):
  """Model `name` built with Keras `keras_version` (2: tf_keras, 3: keras)."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; choose one of '
                     f'{", ".join(MODELS)}.')
  return MODELS[name](input_shape, num_classes,
                      keras=keras_compat.keras_module(keras_version))


def compile_for_classification(model, optimizer):
  """Integer labels, logits out, accuracy reported."""
  keras = keras_compat.keras_of(model)
  model.compile(
      optimizer=optimizer,
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=['accuracy'])
  return model


# The shape of each model's per-layer targets, rescaled to any overall rate
# with tf_admm.targets.rescale. LeNet-5: the seed paper's keep ratios at 167x.
# LeNet-300-100: the paper's 22.9x ratios for fc1 and fc2, with the
# 1,000-weight output layer kept at a higher share, which held accuracy
# better above 50x here.
KEEP_RATIO_PROFILES = {
    'lenet5': {'conv1': 0.2, 'conv2': 0.053, 'fc1': 0.002, 'fc2': 0.07},
    'lenet300_100': {'fc1': 0.04, 'fc2': 0.07, 'fc3': 0.5},
}

# The relative channel keep ratios of the layers whose channels
# `--structure=channels` prunes (the output layer's are the classes),
# scaled to a MAC or weight target. LeNet-5: fc1 reads 800 inputs per unit
# and its 500 units feed only the output, so it gives up twice the share.
CHANNEL_PROFILES = {
    'lenet5': {'conv1': 1.0, 'conv2': 1.0, 'fc1': 0.5},
    'lenet300_100': {'fc1': 1.0, 'fc2': 1.0},
    # Every convolution alike; fc1 at half their share, like LeNet-5's.
    'vgg_small': {'conv1a': 1.0, 'conv1b': 1.0, 'conv2a': 1.0,
                  'conv2b': 1.0, 'conv3a': 1.0, 'conv3b': 1.0, 'fc1': 0.5},
    # The expansions (their channels live only inside the block) and the
    # head; the projections are tied together by the residual Adds.
    'mobilenet_v2_small': dict(
        {f'b{i}_expand': 1.0 for i in range(1, 7)}, head=1.0),
}


def keep_ratio_profile(name: str) -> dict:
  """`KEEP_RATIO_PROFILES[name]`, or every layer with prunable weights alike
  for a model without one."""
  if name in KEEP_RATIO_PROFILES:
    return KEEP_RATIO_PROFILES[name]
  return {w.layer.name: 1.0 for w in weights_lib.prunable_weights(build(name))}
