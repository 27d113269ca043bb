"""The absl flags that choose a dataset, shared by every command line."""

import sys

from absl import app
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


def run_with_help(module_name: str, main) -> None:
  """`app.run(main)` for the program defined in `module_name`, with its
  flags and the dataset's made the running program's own: run as an
  installed console script, whose name absl takes for the main module,
  --help would list none of them."""
  for module in (module_name, __name__):
    for flag in flags.FLAGS.get_key_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)
