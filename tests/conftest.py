"""Shared fixtures: real MNIST (offline through $TF_ADMM_DATASETS) and a
briefly trained LeNet-5, made once per test session."""

import os

import numpy as np
import pytest

import tf_admm
from tf_admm import datasets
from tf_admm import keras_compat
from tf_admm import models
from tf_admm import projections
from tf_admm.keras_compat import keras

TRAIN_EXAMPLES = 12000
TEST_EXAMPLES = 5000


@pytest.fixture(params=[2, 3], ids=['keras2', 'keras3'])
def any_keras(request):
  """Each Keras in turn: tf_keras, then Keras 3 (a test taking it runs once
  on each)."""
  return keras_compat.keras_module(request.param)


@pytest.fixture(scope='session')
def mnist():
  """(x_train, y_train, x_test, y_test): subsets of real MNIST."""
  data = datasets.load('mnist', manual_dir=datasets.default_manual_dir('mnist'))
  return (data.x_train[:TRAIN_EXAMPLES], data.y_train[:TRAIN_EXAMPLES],
          data.x_test[:TEST_EXAMPLES], data.y_test[:TEST_EXAMPLES])


@pytest.fixture(scope='session')
def pretrained_lenet5_weights(mnist):
  x, y, _, _ = mnist
  keras.utils.set_random_seed(0)
  model = models.compile_for_classification(models.lenet5(),
                                            keras.optimizers.Adam(1e-3))
  model.fit(x, y, batch_size=128, epochs=2, verbose=0)
  return model.get_weights()


@pytest.fixture
def pretrained_lenet5(pretrained_lenet5_weights):
  """A fresh LeNet-5 holding the session's pretrained weights."""
  model = models.compile_for_classification(models.lenet5(),
                                            keras.optimizers.Adam(1e-3))
  model.set_weights(pretrained_lenet5_weights)
  return model


def small_model(seed=0, keras=keras):  # pylint: disable=redefined-outer-name
  """A built two-layer model for fast unit tests, of the Keras `keras`
  (Keras 2 by default)."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((6, 6, 1)),
      keras.layers.Conv2D(4, 3, name='conv'),
      keras.layers.Flatten(name='flatten'),
      keras.layers.Dense(3, name='dense'),
  ])


def separable_cnn(seed=0):
  """A built functional CNN: separable, depthwise and transposed 2-D convs.

  (10, 10, 3) -> sep (8, 8, 8) -> bn -> dw (6, 6, 16) -> up (8, 8, 5)
  -> flatten (320) -> fc (3).
  """
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((10, 10, 3))
  x = keras.layers.SeparableConv2D(8, 3, name='sep')(inputs)
  x = keras.layers.BatchNormalization(name='bn')(x)
  x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name='dw')(x)
  x = keras.layers.Conv2DTranspose(5, 3, name='up')(x)
  x = keras.layers.Flatten(name='flatten')(x)
  outputs = keras.layers.Dense(3, name='fc')(x)
  return keras.Model(inputs, outputs)


def token_model(seed=0, keras=keras):  # pylint: disable=redefined-outer-name
  """A built Sequential over 10 int32 tokens from a vocabulary of 50, of
  the Keras `keras` (Keras 2 by default)."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((10,), dtype='int32'),
      keras.layers.Embedding(50, 8, name='emb'),
      keras.layers.Conv1D(8, 3, name='c1'),
      keras.layers.GlobalAveragePooling1D(name='pool'),
      keras.layers.Dense(3, name='fc'),
  ])


def project_kernels(model, levels):
  """Puts the named layers' kernels on their `Quantize` levels: {layer name:
  constraint with its axis set}."""
  for name, constraint in levels.items():
    layer = model.get_layer(name)
    kernel, *rest = layer.get_weights()
    layer.set_weights([constraint.project(kernel).values, *rest])


def nested_model(seed=0):
  """A built functional model around a nested Sequential 'block'; it takes
  random_batch()'s inputs.

  (6, 6, 1) -> block[ic (4, 4, 4) -> ibn -> iflat (64) -> id (8)] -> out (3).
  """
  keras.utils.set_random_seed(seed)
  inner = keras.Sequential([
      keras.layers.Conv2D(4, 3, name='ic'),
      keras.layers.BatchNormalization(name='ibn'),
      keras.layers.Flatten(name='iflat'),
      keras.layers.Dense(8, name='id'),
  ], name='block')
  inputs = keras.Input((6, 6, 1))
  outputs = keras.layers.Dense(3, name='out')(inner(inputs))
  return keras.Model(inputs, outputs)


def application_mobilenet_v2(keras):  # pylint: disable=redefined-outer-name
  """(keras.applications' MobileNetV2 at 32x32 and width 0.35, untrained,
  logits out; 16 random images; their random labels)."""
  keras.utils.set_random_seed(0)
  model = keras.applications.MobileNetV2(
      input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
      classifier_activation=None)
  rng = np.random.default_rng(0)
  return (model, rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
          rng.integers(0, 10, 16))


def random_batch(n=32, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 6, 6, 1)).astype(np.float32),
          rng.integers(0, 3, size=n))


def file_bytes(folder):
  """{path: bytes} of every file under `folder` (a pathlib.Path)."""
  return {path: path.read_bytes() for path in sorted(folder.rglob('*'))
          if path.is_file()}


def pytest_report_header(config):
  del config
  return f'{datasets.DATASETS_ENV}={os.environ.get(datasets.DATASETS_ENV)}'


@pytest.fixture(scope='session')
def pruned_lenet5(mnist, pretrained_lenet5_weights):
  """(stripped LeNet-5 pruned 60x and retrained briefly, its dense parent)."""
  x, y, _, _ = mnist
  dense = models.lenet5()
  dense.set_weights(pretrained_lenet5_weights)
  keep = tf_admm.keep_counts(dense, tf_admm.CompressionRate(60))
  masks = {w.path: projections.keep_top_k(w.variable.numpy(),
                                          keep[w.path]).mask
           for w in tf_admm.prunable_weights(dense)}
  wrapped = models.compile_for_classification(
      tf_admm.to_pruning_wrappers(dense, masks), keras.optimizers.Adam(1e-3))
  wrapped.fit(x, y, batch_size=128, epochs=2, verbose=0,
              callbacks=[tf_admm.update_pruning_step()])
  return tf_admm.strip_pruning(wrapped), dense
