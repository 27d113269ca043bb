"""Datasets load as themselves, fail fast on a bad manual folder and prepare
once when two processes want them at the same time."""

import concurrent.futures
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from tf_admm import datasets

MNIST_ARCHIVES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                  't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


@pytest.mark.slow
def test_mnist_and_fashion_mnist_prepare_from_their_own_archives(
    tmp_path, monkeypatch):
  # TFDS reads this many examples from the front of each archive.
  monkeypatch.setattr(tfds_mnist, '_TRAIN_EXAMPLES', 6000)
  monkeypatch.setattr(tfds_mnist, '_TEST_EXAMPLES', 1000)
  loaded = {name: datasets.load(name, datasets.default_manual_dir(name),
                                data_dir=str(tmp_path))
            for name in ('mnist', 'fashion_mnist')}
  mnist, fashion = loaded['mnist'], loaded['fashion_mnist']
  assert mnist.x_train.shape == fashion.x_train.shape == (6000, 28, 28, 1)
  # Fashion-MNIST's clothes cover far more of the frame than digits do.
  assert fashion.x_train.mean() > mnist.x_train.mean() + 0.1
  assert not np.array_equal(mnist.y_train[:100], fashion.y_train[:100])


def _manual_folder(tmp_path, names=MNIST_ARCHIVES):
  """A manual folder in tmp_path with copies of these MNIST archives."""
  manual = tmp_path / 'manual'
  manual.mkdir()
  for name in names:
    shutil.copy(os.path.join(datasets.default_manual_dir('mnist'), name),
                manual)
  return manual


def _snapshot(folder):
  """{name: (mtime, bytes)} of each file in folder."""
  return {path.name: (path.stat().st_mtime_ns, path.read_bytes())
          for path in folder.iterdir()}


def _load_mnist_failing_fast(manual, tmp_path):
  """The ValueError's message of loading MNIST from manual: in seconds,
  neither downloading nor touching the folder."""
  before = _snapshot(manual)
  start = time.time()
  with pytest.raises(ValueError) as error:
    datasets.load('mnist', str(manual), data_dir=str(tmp_path / 'tfds'))
  assert time.time() - start < 10
  assert _snapshot(manual) == before
  return str(error.value)


def test_a_partial_manual_folder_names_the_missing_archives(tmp_path):
  manual = _manual_folder(tmp_path, MNIST_ARCHIVES[:2])
  message = _load_mnist_failing_fast(manual, tmp_path)
  assert 'Could not prepare' in message
  for name in MNIST_ARCHIVES[2:]:
    assert name in message
  for name in MNIST_ARCHIVES[:2]:
    assert name not in message
  assert 'Put the original archives in that folder' in message
  assert 'https://storage.googleapis.com/cvdf-datasets/mnist/' in message


def _truncate(path):
  path.write_bytes(path.read_bytes()[:5000])


def _random_bytes(path):
  path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _fashion_mnists(path):  # a sound archive of the same name
  shutil.copy(os.path.join(datasets.default_manual_dir('fashion_mnist'),
                           path.name), path)


@pytest.mark.parametrize('name, corrupt', [
    ('train-images-idx3-ubyte.gz', _truncate),
    ('t10k-labels-idx1-ubyte.gz', _random_bytes),
    ('train-labels-idx1-ubyte.gz', _fashion_mnists),
])
def test_a_bad_archive_is_named(tmp_path, name, corrupt):
  manual = _manual_folder(tmp_path)
  corrupt(manual / name)
  message = _load_mnist_failing_fast(manual, tmp_path)
  assert 'Could not prepare' in message
  assert [n for n in MNIST_ARCHIVES if n in message] == [name]


def test_an_archive_tfds_has_no_file_name_for_is_never_downloaded(
    tmp_path, monkeypatch):
  # TFDS finds an archive in the manual folder by the file name registered
  # for its URL, for MNIST or any dataset: without those it would download.
  monkeypatch.setattr(tfds.image_classification.MNIST, 'url_infos', None)
  monkeypatch.setattr(tfds.download.checksums, 'get_all_url_infos', dict)
  message = _load_mnist_failing_fast(_manual_folder(tmp_path), tmp_path)
  assert 'https://storage.googleapis.com/cvdf-datasets/mnist/' in message


# Loads MNIST from argv[1] into argv[2] as soon as argv[3] lists 2 processes
# ready, and prints its sizes. MNIST's builder reads its split sizes from
# these constants: a tenth of the examples keeps the preparation short.
_LOAD_MNIST_AT_ONCE = """
import os, pathlib, sys, time
from tensorflow_datasets.image_classification import mnist
from tf_admm import datasets
mnist._TRAIN_EXAMPLES, mnist._TEST_EXAMPLES = 6000, 1000
ready = pathlib.Path(sys.argv[3])
(ready / str(os.getpid())).touch()
while len(list(ready.iterdir())) < 2:
  time.sleep(0.05)
data = datasets.load('mnist', sys.argv[1], sys.argv[2])
print(len(data.x_train), len(data.x_test))
"""


@pytest.mark.slow
def test_two_processes_prepare_the_same_dataset_at_once(tmp_path):
  manual = _manual_folder(tmp_path)
  before = _snapshot(manual)
  (tmp_path / 'ready').mkdir()
  command = [sys.executable, '-c', _LOAD_MNIST_AT_ONCE, str(manual),
             str(tmp_path / 'tfds'), str(tmp_path / 'ready')]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    runs = list(pool.map(
        lambda _: subprocess.run(command, capture_output=True, text=True,
                                 timeout=300, env=env), range(2)))
  for run in runs:
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == '6000 1000'  # TFDS prints first
  # One prepared it; the other waited, then read it.
  assert sum('downloaded and prepared' in run.stdout for run in runs) == 1
  assert _snapshot(manual) == before


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


def test_a_class_count_the_model_lacks_is_refused_before_preparing(tmp_path):
  with pytest.raises(ValueError, match="Dataset 'mnist' has 10 classes; "
                     'this model has 3 outputs'):
    datasets.load('mnist', datasets.default_manual_dir('mnist'),
                  data_dir=str(tmp_path), num_classes=3)
  assert not any(tmp_path.iterdir())
