"""The reference networks of the ADMM pruning papers, for MNIST-sized input."""

from tf_admm.keras_compat import keras

layers = keras.layers


def lenet5(input_shape=(28, 28, 1), num_classes=10):
  """LeNet-5 as in the papers: conv 20@5x5, conv 50@5x5, fc 500, fc 10."""
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


def lenet300_100(input_shape=(28, 28, 1), num_classes=10):
  """LeNet-300-100: fc 300, fc 100, fc 10."""
  return keras.Sequential([
      keras.Input(input_shape),
      layers.Flatten(name='flatten'),
      layers.Dense(300, activation='relu', name='fc1'),
      layers.Dense(100, activation='relu', name='fc2'),
      layers.Dense(num_classes, name='fc3'),
  ], name='lenet300_100')


MODELS = {'lenet5': lenet5, 'lenet300_100': lenet300_100}


def build(name: str, input_shape=(28, 28, 1), num_classes=10):
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; choose one of '
                     f'{", ".join(MODELS)}.')
  return MODELS[name](input_shape, num_classes)


def compile_for_classification(model, optimizer):
  """Integer labels, logits out, accuracy reported."""
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
