"""Image-classification datasets through TensorFlow Datasets, offline too.

Offline, TFDS prepares a dataset from its original archives in a "manual"
folder (the files the download would fetch, under their usual names). Tests,
CI and the examples find those folders through $TF_ADMM_DATASETS, one
sub-folder per dataset; a user with internet needs neither.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tf_admm import arguments
from tf_admm import run_files
from tf_admm.keras_compat import keras

DATASETS_ENV = 'TF_ADMM_DATASETS'


@dataclasses.dataclass
class ImageDataset:
  name: str
  x_train: np.ndarray  # float32 in [0, 1], NHWC
  y_train: np.ndarray  # int64 class ids
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int

  @property
  def input_shape(self):
    return self.x_train.shape[1:]

  def split_validation(self, fraction: float, seed: int):
    """(train, validation) arrays: a seeded random slice of the train split."""
    order = np.random.default_rng(seed).permutation(len(self.x_train))
    cut = int(round(len(order) * (1 - fraction)))
    train, val = order[:cut], order[cut:]
    return ((self.x_train[train], self.y_train[train]),
            (self.x_train[val], self.y_train[val]))


def check_shift(shift_pixels: int, image_size) -> None:
  """Raises unless `shift_pixels` is a whole number of pixels less than
  each side of `image_size` (height, width): a shift must leave part of
  the image in view."""
  arguments.whole_number('shift_pixels', shift_pixels)
  if shift_pixels >= min(image_size):
    raise ValueError(
        f'shift_pixels ({shift_pixels}) must be less than the images\' '
        f'height and width ({image_size[0]}x{image_size[1]}).')


def shifted_batches(x, y, batch_size: int, shift_pixels: int,
                    seed: int) -> tf.data.Dataset:
  """Shuffled training batches, each image moved by up to `shift_pixels` in
  each direction (random per example, zeros shifted in): a cheap augmentation
  that lets small fully connected nets generalize past their plain accuracy.
  """
  check_shift(shift_pixels, x.shape[1:3])
  if shift_pixels < 1:
    raise ValueError(f'shift_pixels must be >= 1, got {shift_pixels}.')
  height, width = x.shape[1:3]
  shift = keras.layers.RandomTranslation(
      shift_pixels / height, shift_pixels / width, fill_mode='constant',
      interpolation='nearest', seed=seed)
  return (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size)
          .map(lambda images, labels: (shift(images, training=True), labels),
               num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))


def default_manual_dir(name: str) -> Optional[str]:
  """$TF_ADMM_DATASETS/<name> when that folder exists, else None."""
  root = os.environ.get(DATASETS_ENV)
  if root and os.path.isdir(os.path.join(root, name)):
    return os.path.join(root, name)
  return None


def _builder(name, data_dir):
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f'Unknown TFDS dataset {name!r}; tfds.list_builders() '
                     'lists the names.') from None


def _is_original(path, url_info):
  """Whether the file at `path` has the size and SHA-256 TFDS registered."""
  if os.path.getsize(path) != url_info.size:
    return False
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest() == url_info.checksum


def _check_manual_dir(builder, manual_dir):
  """Raises ValueError unless `manual_dir` holds every archive TFDS registers
  for the dataset, byte for byte: TFDS would download a missing one (offline,
  retrying for minutes) and names only the first damaged one it meets."""
  # {file name: (url, registered size and checksum)}; archives TFDS knows no
  # file name for are _forbid_downloads' to refuse.
  archives = {info.filename: (url, info)
              for url, info in (builder.url_infos or {}).items()
              if info.filename}
  paths = {name: os.path.join(manual_dir, name) for name in sorted(archives)}
  missing = [name for name, path in paths.items() if not os.path.isfile(path)]
  bad = [name for name, path in paths.items()
         if name not in missing and not _is_original(path, archives[name][1])]
  if not missing and not bad:
    return
  problems = []
  if missing:
    problems.append(f'missing {", ".join(missing)}')
  if bad:
    problems.append('not the original archive (truncated, damaged or another '
                    f'dataset\'s): {", ".join(bad)}')
  urls = [archives[name][0] for name in missing + bad]
  raise ValueError(f'Could not prepare dataset {builder.name!r} from '
                   f'{manual_dir!r}: {"; ".join(problems)}. Put the original '
                   'archives in that folder under those names; TFDS downloads '
                   f'them from {", ".join(urls)}.')


def _forbid_downloads(builder, manual_dir):
  """Makes `builder` raise instead of downloading a file it does not find in
  `manual_dir`: offline, a download retries for minutes."""
  make_manager = builder._make_download_manager  # pylint: disable=protected-access

  def refuse(resource):
    raise ValueError(f'TFDS finds no file for {resource.url} in '
                     f'{manual_dir!r} (it registers no file name for it); '
                     'prepare the dataset once online, without a manual '
                     'folder.')

  def make_offline_manager(**kwargs):
    manager = make_manager(**kwargs)
    manager._download = refuse  # pylint: disable=protected-access
    return manager

  builder._make_download_manager = make_offline_manager  # pylint: disable=protected-access


@contextlib.contextmanager
def _preparation_lock(builder):
  """Holds `<data_dir>/<name>.tf_admm.lock` until the block ends: a second
  process preparing the same dataset fails renaming its `incomplete.*`
  folder onto the first's result, so it waits instead."""
  builder.data_dir_root.mkdir(parents=True, exist_ok=True)
  with open(builder.data_dir_root / f'{builder.name}.tf_admm.lock',
            'a') as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
    yield


def _prepare(builder, manual_dir):
  """Prepares the dataset, from `manual_dir` alone when it is given."""
  if manual_dir is not None:
    _check_manual_dir(builder, manual_dir)
    _forbid_downloads(builder, manual_dir)
  try:
    # TFDS caches extracted archives by file name, and MNIST and
    # Fashion-MNIST share file names: extract each dataset on its own.
    with tempfile.TemporaryDirectory() as extract_dir:
      config = tfds.download.DownloadConfig(
          manual_dir=manual_dir, extract_dir=extract_dir,
          try_download_gcs=manual_dir is None)
      builder.download_and_prepare(download_config=config)
  except Exception as error:  # TFDS raises many kinds; all mean the same here
    where = f' from {manual_dir!r}' if manual_dir else ''
    raise ValueError(f'Could not prepare dataset {builder.name!r}{where}: '
                     f'{run_files.describe_error(error)}') from error


def load(name: str,
         manual_dir: Optional[str] = None,
         data_dir: Optional[str] = None,
         input_shape=(28, 28, 1),
         num_classes: Optional[int] = None) -> ImageDataset:
  """Loads a TFDS image-classification dataset as numpy arrays.

  Args:
    name: a TFDS name, for example 'mnist' or 'fashion_mnist'.
    manual_dir: folder holding the dataset's original archives, for offline
      preparation. None prepares it the usual way (downloading if needed).
    data_dir: where TFDS keeps prepared datasets (its default if None).
    input_shape: the image shape the caller's model expects.
    num_classes: the classes it tells apart, if known (checked, like the
      shape, before anything is prepared).
  """
  if manual_dir is not None and not os.path.isdir(manual_dir):
    raise ValueError(f'The manual folder {manual_dir!r} for dataset {name!r} '
                     'does not exist; point --manual_dir (or '
                     f'${DATASETS_ENV}) at the folder of its archives.')
  builder = _builder(name, data_dir)
  features = builder.info.features
  if set(builder.info.supervised_keys or ()) != {'image', 'label'}:
    raise ValueError(f'Dataset {name!r} is not an image-classification '
                     'dataset with (image, label) pairs.')
  if tuple(features['image'].shape) != tuple(input_shape):
    raise ValueError(f'Dataset {name!r} has images of shape '
                     f'{features["image"].shape}; this model needs '
                     f'{tuple(input_shape)}.')
  if num_classes is not None and features['label'].num_classes != num_classes:
    raise ValueError(f'Dataset {name!r} has {features["label"].num_classes} '
                     f'classes; this model has {num_classes} outputs. Choose '
                     'the dataset it was trained on.')
  # TFDS renames the finished folder into place, so it exists only once
  # prepared. Lock only to prepare: a prepared data_dir may be read-only.
  if not builder.data_path.exists():
    with _preparation_lock(builder):
      # Another process may have prepared it while this one waited; a new
      # builder reads what that one wrote.
      builder = _builder(name, data_dir)
      if not builder.data_path.exists():
        _prepare(builder, manual_dir)
  train, test = tfds.as_numpy(builder.as_dataset(
      split=['train', 'test'], batch_size=-1, as_supervised=True))
  return ImageDataset(
      name=name,
      x_train=train[0].astype(np.float32) / 255.0,
      y_train=train[1].astype(np.int64),
      x_test=test[0].astype(np.float32) / 255.0,
      y_test=test[1].astype(np.int64),
      num_classes=features['label'].num_classes)
