r"""Channel ADMM against L1-norm filter pruning (Li et al., 2017) at equal
epochs, from the same pretrained model to the same channel counts.

  python examples/prune_mnist.py --preset=fast --output_dir=runs/fast
  python benchmarks/compare_l1_filters.py --run_dir=runs/fast

The baseline starts from the run's pretrained dense model, keeps in each
layer the filters (units) of largest L1 norm, as many as the run kept,
zeroes the others' biases and BatchNormalization scale and shift (as the
run's masked retraining holds them), cuts them out (tf_admm.surgery) and
fine-tunes the small model for as many
epochs as the run trained after pretraining (ADMM, masked retraining and
fine-tuning together), with the run's optimizer, batch size, augmentation
and validation split, the learning rate cosine-decayed over those epochs.
Both final models are measured the same way: test accuracy, MACs, and
float32 LiteRT latency (1 thread, batch 1, median), in this process.

Writes results.json into --results_dir, by default
benchmarks/results/l1_filters/<run folder name, less any _seed<N>>/seed<the
run's seed>/, and prints a line. A committed result gets its entry in
benchmarks/results/manifest.json, and `python benchmarks/render.py` renders
benchmarks/reports/l1_filters.md.
"""

import json
import os
import platform
import re
import shlex
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import tf_admm
from tf_admm import attach
from tf_admm import datasets
from tf_admm import macs
from tf_admm import models
from tf_admm import surgery
from tf_admm import trainer
from tf_admm.keras_compat import keras
from tflite_export import converter
from tflite_export import report as tflite_report

RUN_DIR = flags.DEFINE_string('run_dir', None, 'A finished `prune_mnist.py '
                              '--structure=channels` run folder.')
RESULTS_DIR = flags.DEFINE_string(
    'results_dir', None, 'Where results.json goes. Default: '
    'benchmarks/results/l1_filters/<run folder name, less any _seed<N>>/'
    'seed<the run\'s seed>.')
VALIDATION_EXAMPLES = flags.DEFINE_integer(
    'validation_examples', 5000, 'The run\'s --validation_examples: with the '
    'training examples it recorded, it gives the run\'s split again.')
flags.mark_flag_as_required('run_dir')

FLAGS = flags.FLAGS


def _read(*parts):
  with open(os.path.join(*parts)) as f:
    return json.load(f)


def l1_filter_masks(model, channels):
  """Li et al.'s criterion: in each named layer, zero every output channel
  but the `channels[name]` of largest L1 norm (sum of |kernel|)."""
  for name, count in channels.items():
    layer = model.get_layer(name)
    kernel, *rest = layer.get_weights()
    norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    dropped = np.argsort(-norms, kind='stable')[count:]
    kernel[..., dropped] = 0
    layer.set_weights([kernel, *rest])
  return model


def results_dir(run_dir, seed):
  """--results_dir, else the tree's folder for the run and its seed."""
  if RESULTS_DIR.value:
    return RESULTS_DIR.value
  name = re.sub(r'_seed\d+$', '', os.path.basename(os.path.normpath(run_dir)))
  return os.path.join('benchmarks', 'results', 'l1_filters', name,
                      f'seed{seed}')


def main(argv):
  del argv
  run_dir = RUN_DIR.value
  run = _read(run_dir, 'run.json')
  settings = run['settings']
  shrunk = _read(run_dir, 'candidates', 'shrunk', 'metrics.json')
  channels = {name: after for name, (before, after) in
              shrunk['channels'].items() if after < before}
  epochs = settings['admm_epochs'] * len(settings['stage_rates']) + (
      settings['retrain_epochs'] * len(settings['stage_rates']) +
      settings['finetune_epochs'])

  dataset = datasets.load(run['dataset'],
                          manual_dir=datasets.default_manual_dir(
                              run['dataset']))
  # prune_mnist.py's split: the first train + validation examples, the
  # validation ones drawn from them with seed 0.
  examples = run['train_examples'] + VALIDATION_EXAMPLES.value
  dataset.x_train = dataset.x_train[:examples]
  dataset.y_train = dataset.y_train[:examples]
  (x, y), (x_val, y_val) = dataset.split_validation(
      VALIDATION_EXAMPLES.value / examples, seed=0)
  if len(x) != run['train_examples']:
    sys.exit(f'compare_l1_filters: the run trained on {run["train_examples"]} '
             f'examples; this split has {len(x)}.')

  dense = models.build(run['model'], dataset.input_shape, dataset.num_classes)
  dense.load_weights(os.path.join(run_dir, 'dense', 'model.weights.h5'))
  start = time.time()
  masked = l1_filter_masks(
      attach.clone_with(dense, lambda layer, config: config), channels)
  # As the run's retraining does: pruned channels output exactly 0, so
  # that zero padding and BatchNormalization do not keep them.
  surgery.silence_pruned_channels(masked)
  small, widths = surgery.remove_channels(masked)
  if {name: after for name, (_, after) in widths.items()} != {
      name: after for name, (_, after) in shrunk['channels'].items()}:
    sys.exit(f'compare_l1_filters: the baseline kept {widths}, the run '
             f'{shrunk["channels"]}.')
  keras.utils.set_random_seed(settings['seed'])
  steps = -(-len(x) // settings['batch_size'])
  small.compile(
      keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
          settings['learning_rate'], decay_steps=epochs * steps)),
      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=['accuracy'])
  if settings['shift_pixels']:
    inputs = dict(x=datasets.shifted_batches(
        x, y, settings['batch_size'], settings['shift_pixels'],
        settings['seed']))
  else:
    inputs = dict(x=x, y=y, batch_size=settings['batch_size'])
  small.fit(**inputs, epochs=epochs, verbose=2)
  seconds = time.time() - start

  admm = tf_admm.load_model(
      os.path.join(run_dir, 'candidates', 'shrunk', 'model.keras'))
  latency = tflite_report.latency_ms(
      {'dense': converter.convert(dense), 'admm': converter.convert(admm),
       'l1_filters': converter.convert(small)}, dataset.x_test[0])
  result = {
      'command': shlex.join(sys.argv),
      'machine': f'{platform.machine()}, {os.cpu_count()} cores, '
                 f'{platform.python_version()}, tensorflow {tf.__version__}',
      'run_dir': run_dir,
      'run_command': _read(run_dir, 'report.json').get('command'),
      'epochs_after_pretraining': epochs,
      'channels': shrunk['channels'],
      'macs': {'dense': macs.model_macs(dense)['total'],
               'admm': macs.model_macs(admm)['total'],
               'l1_filters': macs.model_macs(small)['total']},
      'test_accuracy': {
          'dense': trainer.accuracy(dense, dataset.x_test,
                                        dataset.y_test),
          'admm': trainer.accuracy(admm, dataset.x_test, dataset.y_test),
          'l1_filters': trainer.accuracy(small, dataset.x_test,
                                             dataset.y_test)},
      'val_accuracy': {
          'admm': trainer.accuracy(admm, x_val, y_val),
          'l1_filters': trainer.accuracy(small, x_val, y_val)},
      'latency_ms': latency,
      'latency_runtime': 'LiteRT float32 .tflite, 1 thread, batch 1, median',
      'l1_filters_seconds': seconds,
  }
  folder = results_dir(run_dir, settings['seed'])
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, 'results.json')
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  accuracy = result['test_accuracy']
  print(f'channel ADMM {100 * accuracy["admm"]:.2f}% against L1 filters '
        f'{100 * accuracy["l1_filters"]:.2f}% at {epochs} epochs; MACs '
        f'{result["macs"]["admm"]:,} and {result["macs"]["l1_filters"]:,} of '
        f'{result["macs"]["dense"]:,}; latency {latency["admm"]:.3f} and '
        f'{latency["l1_filters"]:.3f} ms of {latency["dense"]:.3f}. {path}')


if __name__ == '__main__':
  app.run(main)
