"""The absl flags that choose a dataset, shared by every command line."""

from absl import flags

from tf_admm import datasets

DATASET = flags.DEFINE_string(
    'dataset', 'mnist', 'TFDS name of a 28x28x1 image-classification dataset '
    '(mnist, fashion_mnist, kmnist, ...).')
MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder with the dataset\'s original archives, for '
    f'offline preparation. Default: ${datasets.DATASETS_ENV}/<dataset> when '
    'that folder exists, else TFDS downloads.')
TFDS_DATA_DIR = flags.DEFINE_string(
    'tfds_data_dir', None, 'Where TFDS keeps prepared datasets (TFDS\'s '
    'default if unset).')


def load(input_shape=(28, 28, 1), num_classes=None) -> datasets.ImageDataset:
  """The dataset the flags name."""
  manual_dir = MANUAL_DIR.value or datasets.default_manual_dir(DATASET.value)
  return datasets.load(DATASET.value, manual_dir=manual_dir,
                       data_dir=TFDS_DATA_DIR.value, input_shape=input_shape,
                       num_classes=num_classes)
