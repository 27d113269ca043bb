"""Datasets that share archive file names load as themselves."""

import numpy as np

from tf_admm import datasets


def test_mnist_and_fashion_mnist_prepare_from_their_own_archives(tmp_path):
  loaded = {name: datasets.load(name, datasets.default_manual_dir(name),
                                data_dir=str(tmp_path))
            for name in ('mnist', 'fashion_mnist')}
  mnist, fashion = loaded['mnist'], loaded['fashion_mnist']
  assert mnist.x_train.shape == fashion.x_train.shape == (60000, 28, 28, 1)
  # Fashion-MNIST's clothes cover far more of the frame than digits do.
  assert fashion.x_train.mean() > mnist.x_train.mean() + 0.1
  assert not np.array_equal(mnist.y_train[:100], fashion.y_train[:100])
