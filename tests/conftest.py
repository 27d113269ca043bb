"""Shared fixtures: real MNIST (offline through $TF_ADMM_DATASETS) and a
briefly trained LeNet-5, made once per test session."""

import os

import numpy as np
import pytest

import tf_admm  # sets TF_USE_LEGACY_KERAS before TensorFlow loads
import tf_keras as keras
from tf_admm import datasets
from tf_admm import models

TRAIN_EXAMPLES = 12000
TEST_EXAMPLES = 5000


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


def small_model(seed=0):
  """A built two-layer model for fast unit tests."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((6, 6, 1)),
      keras.layers.Conv2D(4, 3, name='conv'),
      keras.layers.Flatten(name='flatten'),
      keras.layers.Dense(3, name='dense'),
  ])


def random_batch(n=32, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 6, 6, 1)).astype(np.float32),
          rng.integers(0, 3, size=n))


def pytest_report_header(config):
  del config
  return f'{datasets.DATASETS_ENV}={os.environ.get(datasets.DATASETS_ENV)}'


@pytest.fixture(scope='session')
def pruned_lenet5(mnist, pretrained_lenet5_weights):
  """(stripped LeNet-5 pruned 60x and retrained briefly, its dense parent)."""
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  x, y, _, _ = mnist
  dense = models.lenet5()
  dense.set_weights(pretrained_lenet5_weights)
  keep = tf_admm.keep_counts(dense, tf_admm.CompressionRate(60))
  masks = {l.name: tf_admm.keep_top_k(l.kernel, keep[l.name]).mask.numpy()
           for l in tf_admm.prunable_layers(dense)}
  wrapped = models.compile_for_classification(
      tf_admm.to_pruning_wrappers(dense, masks), keras.optimizers.Adam(1e-3))
  wrapped.fit(x, y, batch_size=128, epochs=2, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  return tfmot.sparsity.keras.strip_pruning(wrapped), dense
