"""Datasets that share archive file names load as themselves."""

import numpy as np
import pytest

from tf_admm import datasets


@pytest.mark.slow
def test_mnist_and_fashion_mnist_prepare_from_their_own_archives(tmp_path):
  loaded = {name: datasets.load(name, datasets.default_manual_dir(name),
                                data_dir=str(tmp_path))
            for name in ('mnist', 'fashion_mnist')}
  mnist, fashion = loaded['mnist'], loaded['fashion_mnist']
  assert mnist.x_train.shape == fashion.x_train.shape == (60000, 28, 28, 1)
  # Fashion-MNIST's clothes cover far more of the frame than digits do.
  assert fashion.x_train.mean() > mnist.x_train.mean() + 0.1
  assert not np.array_equal(mnist.y_train[:100], fashion.y_train[:100])


def _shifted(image, dy, dx):
  """numpy reference: `image` moved down dy and right dx, zeros shifted in."""
  height, width = image.shape[:2]
  out = np.zeros_like(image)
  out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = (
      image[max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)])
  return out


def test_shifted_batches_move_each_image_by_at_most_the_shift():
  rng = np.random.default_rng(0)
  x = rng.uniform(0.1, 1.0, size=(64, 12, 12, 1)).astype(np.float32)
  y = np.arange(64)
  seen = set()
  batches = list(datasets.shifted_batches(x, y, batch_size=16, shift_pixels=2,
                                          seed=0))
  assert [len(b[1]) for b in batches] == [16, 16, 16, 16]
  for images, labels in batches:
    for image, label in zip(images.numpy(), labels.numpy()):
      matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(image, _shifted(x[label], dy, dx))]
      assert matches, f'example {label} is not a shift of at most 2 pixels'
      seen.add(matches[0])
  assert len(seen) > 5  # the shifts vary
  assert sorted(np.concatenate([b[1].numpy() for b in batches])) == list(y)
  with pytest.raises(ValueError, match='shift_pixels'):
    datasets.shifted_batches(x, y, 16, 0, seed=0)
