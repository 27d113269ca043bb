r"""tfmot's smallest-file pipeline against tf-admm's pruned + quantized file.

  python benchmarks/compare_collaborative.py --admm_run=runs/paper_quantized

The tf-admm side is a finished run of

  python examples/prune_mnist.py --preset=paper_quantized \
      --output_dir=runs/paper_quantized

read, not retrained: its shipped .tflite (packed INT2/INT4 weights; int8 for
k-means levels), its gzip -9 bytes and LiteRT test accuracy, and its Keras
test accuracy, from report.json.

The tfmot side is tfmot's collaborative optimization (pruning, then
sparsity-preserving clustering, then prune- and cluster-preserving
quantization-aware training, PCQAT), started from the SAME pretrained dense
weights (the run's dense/), trained on the SAME examples (the run's
validation split, shifts and seed), with Adam at the run's learning rate and
batch size, to the SAME per-layer kept counts, with as many cluster values as
tf-admm has levels, in the SAME number of post-pretraining epochs:

  prune    tfmot.sparsity prune_low_magnitude per layer, PolynomialDecay from
           0 to the layer's tf-admm sparsity (1 - nonzero / total) over
           --prune_ramp_epochs (default: the run's ADMM epochs, constant
           learning rate, a prune every --prune_frequency steps, default the
           run's prune_every_steps), then --prune_retrain_epochs at the final
           mask (default: the run's retrain epochs, cosine-decayed), as
           tf-admm's pruning stage; strip_pruning.
  cluster  cluster_weights per layer, preserve_sparsity=True, k-means++
           centroids, fine-tuned --cluster_epochs (cosine-decayed);
           strip_clustering.
  pcqat    quantize_annotate_model + quantize_apply with
           Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
           fine-tuned --pcqat_epochs (cosine-decayed), then converted to an
           int8 .tflite (Optimize.DEFAULT: the QAT ranges give full int8).

Epoch split (defaults): the pruning phase gets exactly tf-admm's pruning
epochs (ramp + retraining), so both prune along the same curve; the epochs
tf-admm spent quantizing are shared by clustering and PCQAT, clustering
taking the larger half (ceil(Q / 2)) since it moves the weights most, PCQAT
the rest, at least 1 each (when Q = 1, one retraining epoch is given up).
Any phase can be set by its flag; the results say whether the total still
equals tf-admm's.

Clusters: tf-admm's uniform b-bit levels are 2^b nonzero values {±1..±2^(b-1)}q
(zeros are pruned weights, named by the sparse index); with preserve_sparsity
tfmot spends one cluster on the zero centroid, so each pruned layer gets
2^b + 1 clusters: 2^b nonzero values, as tf-admm (--nozero_cluster: 2^b
clusters, one of them zero). A layer tf-admm kept whole is clustered without
preserve_sparsity into 2^b clusters. Ternary: 2 nonzero values, binary: 2,
k-means b-bit: 2^b.

tfmot 0.8 pitfalls handled here: clustering and PCQAT take stripped models
(strip_pruning, strip_clustering); PCQAT's registry shares one weight
quantizer among all layers of a kind, and one layer without zeros would
turn sparsity preservation off for all of them (`_PcqatScheme` gives each
layer its own); a QuantizeWrapper hides the kernel variable from the inner
layer (read it from the wrapper). tfmot warns that the kernels get no
gradients in PCQAT: it trains the centroids instead, as designed.

Each finished phase is saved in --work_dir (weights, metrics, the inputs it
was made from, and for pcqat the .tflite); rerunning the command resumes
after the last finished phase, and redoes from the first phase whose inputs
(flags, the run) changed.
Both .tflite files are also scored image by image (`paired_difference`):
how many test images each alone gets right, and the standard error of the
accuracy difference, which on MNIST's 10,000 images is about 0.09 points,
about the bar's tolerance of 0.1 points either way.
Writes results.json and RESULTS.md into --results_dir, by default
benchmarks/results/collaborative/one_round/seed<the run's seed>/ (the
current paper_quantized preset, one quantization round, is that variant):

  python benchmarks/compare_collaborative.py \
      --admm_run=runs/paper_quantized_seed1 \
      --work_dir=runs/benchmark_collaborative_one_round_seed1 \
      --results_dir=benchmarks/results/collaborative/one_round/seed1

A committed result gets its entry in benchmarks/results/manifest.json, and
`python benchmarks/render.py` renders benchmarks/reports/collaborative.md.
"""

import copy
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
import zlib

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tf_admm import constraints
from tf_admm import dataset_flags
from tf_admm import datasets
from tf_admm import models
from tf_admm import progressive
from tf_admm import run_files
from tf_admm import trainer
from tf_admm.keras_compat import keras
from tflite_export import evaluate
from tflite_export import micro
from tflite_export import micro_flag
from tflite_export import report as tflite_report

ADMM_RUN = flags.DEFINE_string(
    'admm_run', None, 'A finished tf-admm run folder (examples/prune_mnist.py '
    '--levels=...): run.json, report.json, dense/.')
WORK_DIR = flags.DEFINE_string('work_dir', 'runs/benchmark_collaborative',
                               'Resumable tfmot training state.')
RESULTS_DIR = flags.DEFINE_string(
    'results_dir', None, 'Where results.json and RESULTS.md go. Default: '
    'benchmarks/results/collaborative/one_round/seed<the run\'s seed>.')
TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', None, 'Examples taken from the training split before '
    'the validation examples are held out, as prune_mnist.py\'s flag. '
    'Default: the run\'s (its command\'s --train_examples, or the run\'s '
    'train_examples + validation examples).', lower_bound=1)
VALIDATION_EXAMPLES = flags.DEFINE_integer(
    'validation_examples', None, 'Held-out examples, as prune_mnist.py\'s '
    'flag. Default: the run\'s command\'s, else 5000.', lower_bound=1)
PRUNE_RAMP_EPOCHS = flags.DEFINE_integer(
    'prune_ramp_epochs', None, 'Epochs ramping the sparsity up. Default: the '
    'run\'s ADMM epochs (all stages).', lower_bound=1)
PRUNE_RETRAIN_EPOCHS = flags.DEFINE_integer(
    'prune_retrain_epochs', None, 'Epochs at the final mask. Default: the '
    'run\'s retrain epochs.', lower_bound=0)
CLUSTER_EPOCHS = flags.DEFINE_integer(
    'cluster_epochs', None, 'Sparsity-preserving clustering epochs. Default: '
    'the larger half of the run\'s quantization epochs.', lower_bound=1)
PCQAT_EPOCHS = flags.DEFINE_integer(
    'pcqat_epochs', None, 'PCQAT epochs. Default: the rest of the run\'s '
    'quantization epochs.', lower_bound=1)
PRUNE_FREQUENCY = flags.DEFINE_integer(
    'prune_frequency', None, 'Steps between tfmot\'s prunes. Default: the '
    'run\'s prune_every_steps (50 in its presets).', lower_bound=1)
CENTROID_INIT = flags.DEFINE_enum(
    'centroid_init', 'kmeans_plus_plus',
    ['kmeans_plus_plus', 'linear', 'density_based', 'random'],
    'tfmot CentroidInitialization.')
ZERO_CLUSTER = flags.DEFINE_bool(
    'zero_cluster', True, 'Give tfmot one cluster more than tf-admm\'s '
    'nonzero levels, for the zero centroid preserve_sparsity reserves (equal '
    'nonzero values); --nozero_cluster: as many clusters as levels.')
BITS = flags.DEFINE_list(
    'bits', ['conv1:3', 'conv2:3', 'fc1:2', 'fc2:3'], 'layer:bits of uniform '
    'levels, used only for layers the run\'s report gives no levels for.')
ACCURACY_POINTS = flags.DEFINE_float(
    'accuracy_points', 0.1, 'Largest LiteRT accuracy difference, in '
    'percentage points, that counts as equal accuracy.')
SIZE_BAR = flags.DEFINE_float(
    'size_bar', 1.5, 'tfmot gzip / tf-admm gzip the verdict asks for.')

# --micro, shared with the main job and the export.
flags.adopt_module_key_flags(micro_flag)

FLAGS = flags.FLAGS

PHASES = ('prune', 'cluster', 'pcqat')


def _log(line):
  print(f'[collaborative] {line}', flush=True)


# Pure helpers (tested in tests/test_compare_collaborative.py).


def read_run(folder):
  """(run.json, report.json) of a finished quantized tf-admm run."""
  run_file = os.path.join(folder, 'run.json')
  if not os.path.exists(run_file):
    raise ValueError(f'{folder!r} holds no tf-admm run (run.json is '
                     'missing).')
  for candidate in (os.path.join(folder, 'report.json'),
                    os.path.join(folder, 'candidates', 'quantized',
                                 'report.json')):
    if os.path.exists(candidate):
      report = run_files.read_json(candidate)
      break
  else:
    raise ValueError(f'{folder!r} has no report.json: the run has not '
                     'finished (rerun its command to finish it).')
  if not report.get('quantized'):
    raise ValueError(f'{folder!r} is not a quantized run (its report has no '
                     '"quantized" section); run prune_mnist.py with '
                     '--levels.')
  return run_files.read_json(run_file), report


def layer_targets(report):
  """{layer name: {'total', 'nonzero', 'sparsity'}} of tf-admm's final
  model, from report['layers'] (weight paths such as 'fc1/kernel')."""
  targets = {}
  for entry in report['layers']:
    layer, _, weight = entry['name'].rpartition('/')
    if weight != 'kernel':
      continue
    targets[layer] = {'total': int(entry['total']),
                      'nonzero': int(entry['nonzero']),
                      'sparsity': 1 - entry['nonzero'] / entry['total']}
  return targets


def parse_bits(items):
  """{layer: bits} from ['conv1:3', ...]."""
  bits = {}
  for item in items:
    layer, _, number = item.partition(':')
    if not layer or not number.isdigit():
      raise ValueError(f'--bits: {item!r} is not layer:bits, such as fc1:2.')
    bits[layer] = int(number)
  return bits


def nonzero_levels(config):
  """Distinct nonzero values a tf-admm Quantize config allows."""
  quantize = constraints.Quantize(levels=config['levels'],
                                  bits=config.get('bits'))
  return quantize.level_count - (quantize.levels == 'ternary')


def cluster_counts(report, targets, fallback_bits, zero_cluster=True):
  """{layer: {'levels': description, 'nonzero_levels', 'clusters',
  'preserve_sparsity'}} for the layers of `targets` (`layer_targets`).

  Levels come from report['constraints'][<layer>/kernel]['config'] when it
  is a Quantize constraint, else uniform levels of `fallback_bits[layer]`
  bits. A layer tf-admm pruned is clustered with preserve_sparsity, which
  spends a cluster on the zero centroid: with `zero_cluster` it gets one
  cluster more than the nonzero levels. A layer tf-admm kept whole is
  clustered without it (a zero centroid would zero its smallest weights for
  good), into as many clusters as levels.
  """
  counts = {}
  for layer, target in targets.items():
    entry = report.get('constraints', {}).get(f'{layer}/kernel', {})
    config = entry.get('config', {})
    if entry.get('class_name') == 'Quantize' and 'levels' in config:
      config = {'levels': config['levels'], 'bits': config.get('bits')}
    elif layer in fallback_bits:
      config = {'levels': 'uniform', 'bits': fallback_bits[layer]}
    else:
      raise ValueError(f'The report gives no levels for {layer} and --bits '
                       'names no bits for it.')
    levels = nonzero_levels(config)
    sparse = target['nonzero'] < target['total']
    counts[layer] = {
        'levels': config['levels'] + (f' {config["bits"]}-bit'
                                      if config.get('bits') else ''),
        'nonzero_levels': levels,
        'clusters': levels + int(zero_cluster and sparse),
        'preserve_sparsity': sparse}
  return counts


def command_flag(command, name):
  """The integer value of --name in a shlex-joined command line, or None."""
  if not command:
    return None
  words = shlex.split(command)
  for i, word in enumerate(words):
    if word in (f'--{name}', f'-{name}') and i + 1 < len(words):
      return int(words[i + 1])
    for prefix in (f'--{name}=', f'-{name}='):
      if word.startswith(prefix):
        return int(word[len(prefix):])
  return None


def split_sizes(run, report, train_examples=None, validation_examples=None):
  """(examples before the split, validation examples) as prune_mnist.py
  took them: None examples means the whole training split."""
  command = report.get('command')
  validation = (validation_examples or command_flag(command,
                                                    'validation_examples')
                or 5000)
  total = train_examples or command_flag(command, 'train_examples')
  if total is None and run.get('train_examples') is not None:
    total = run['train_examples'] + validation
  return total, validation


def tfadmm_epochs(run, report):
  """{'pruning': post-pretraining pruning epochs of the final model's
  lineage (a channel run's fine-tuning of the cut model counted as
  retraining), 'ramp', 'retrain', 'quantization'}."""
  settings = run['settings']
  stages = report.get('stages') or []
  # A channel run fine-tunes the cut model before quantizing: retraining.
  finetune = int(report['shrunk']['epochs']) if report.get('shrunk') else 0
  pruning = (sum(int(s['epochs']) for s in stages) if stages else
             len(settings['stage_rates']) * (settings['admm_epochs'] +
                                             settings['retrain_epochs']))
  pruning += finetune
  retrain = (min(settings['retrain_epochs'] + finetune, pruning) if pruning
             else 0)
  return {'pruning': pruning, 'ramp': pruning - retrain, 'retrain': retrain,
          'quantization': int(report['quantized']['epochs'])}


def phase_epochs(admm_epochs, ramp=None, retrain=None, cluster=None,
                 pcqat=None):
  """{'prune_ramp', 'prune_retrain', 'cluster', 'pcqat'}: tf-admm's epochs
  (`tfadmm_epochs`) split over tfmot's phases, overridden where given."""
  split = {'prune_ramp': admm_epochs['ramp'],
           'prune_retrain': admm_epochs['retrain'],
           'cluster': math.ceil(admm_epochs['quantization'] / 2),
           'pcqat': admm_epochs['quantization'] // 2}
  if split['cluster'] < 1:
    split['cluster'] = 1
    split['prune_retrain'] -= 1
  if split['pcqat'] < 1:
    split['pcqat'] = 1
    split['prune_retrain'] -= 1
  while split['prune_retrain'] < 0:  # borrowed more than retraining had
    split['prune_retrain'] += 1
    split['prune_ramp'] -= 1
  given = {'prune_ramp': ramp, 'prune_retrain': retrain, 'cluster': cluster,
           'pcqat': pcqat}
  split.update({k: v for k, v in given.items() if v is not None})
  if split['prune_ramp'] < 1 or split['cluster'] < 1 or split['pcqat'] < 1:
    raise ValueError(f'Every phase needs an epoch (ramp, cluster, pcqat); '
                     f'got {split}.')
  return split


def ramp_end_step(ramp_epochs, steps_per_epoch, frequency):
  """tfmot's PolynomialDecay end_step: the ramp's last step that is a
  multiple of `frequency` (tfmot prunes only there, so an end between two
  would never apply the final sparsity)."""
  end = ramp_epochs * steps_per_epoch // frequency * frequency
  if end < frequency:
    raise ValueError(f'A ramp of {ramp_epochs} epoch(s) of {steps_per_epoch} '
                     f'steps is shorter than one prune interval '
                     f'({frequency} steps).')
  return end


def _floor2(value) -> str:
  """`value` rounded down to 2 decimals."""
  return f'{math.floor(value * 100) / 100:.2f}'


def verdict(admm, tfmot_side, accuracy_points=0.1, size_bar=1.5,
            size='gzip_bytes', runtime='LiteRT'):
  """(one-line verdict, facts) from each side's {size, 'accuracy'} (test
  accuracy in `runtime`, a fraction); `size_bar` None: no bar, only the
  comparison. The facts name the size ratio 'gzip_ratio_tfmot_over_tfadmm',
  or '<size>_ratio_tfmot_over_tfadmm'."""
  ratio = tfmot_side[size] / admm[size]
  difference = 100 * (admm['accuracy'] - tfmot_side['accuracy'])
  equal = abs(difference) <= accuracy_points + 1e-9
  # A file smaller by the bar and ahead on accuracy meets it too.
  ahead = difference > accuracy_points + 1e-9
  ratio_name = ('gzip' if size == 'gzip_bytes' else size) + (
      '_ratio_tfmot_over_tfadmm')
  facts = {ratio_name: ratio,
           'accuracy_difference_points': difference,
           'accuracy_within_points': equal,
           'accuracy_points': accuracy_points, 'size_bar': size_bar,
           'bar_met': None if size_bar is None else bool(
               (equal or ahead) and ratio >= size_bar)}
  # Rounded down, so that a ratio just under the bar never reads as it.
  smaller = (f'tf-admm\'s file is {_floor2(ratio)}x smaller' if ratio >= 1
             else f'tf-admm\'s file is {_floor2(1 / ratio)}x LARGER')
  versus = (f'(tf-admm {100 * admm["accuracy"]:.2f}%, tfmot '
            f'{100 * tfmot_side["accuracy"]:.2f}%)')
  if equal:
    line = (f'{smaller} at equal accuracy (within {accuracy_points:g} '
            'points)')
    if size_bar is not None and ratio < size_bar:
      line += (f'; the bar of {size_bar:g}x is not met (it needs at most '
               f'{math.floor(tfmot_side[size] / size_bar):,} bytes)')
  elif ahead and size_bar is None:
    line = (f'{smaller} and {difference:.2f} points ahead on the test set '
            f'{versus}')
  elif facts['bar_met']:  # ahead on accuracy
    line = (f'{smaller} and {difference:.2f} points ahead on the test set '
            f'{versus}: smaller by the bar and no less accurate, so the bar '
            f'of {size_bar:g}x is met')
  else:
    line = (f'{smaller}, but the {runtime} accuracies differ by '
            f'{difference:+.2f} points {versus}, more than '
            f'{accuracy_points:g}: no equal-accuracy comparison')
    if size_bar is not None:
      line += f', the bar of {size_bar:g}x is not met'
  return line + '.', facts


def paired_difference(tfadmm_correct, tfmot_correct) -> dict:
  """The accuracy difference of two models scored on the same examples,
  with its standard error: per example the difference of their hits (-1, 0
  or 1), whose mean is the accuracy difference; only the examples one model
  gets right and the other wrong move it."""
  tfadmm_correct = np.asarray(tfadmm_correct, bool)
  tfmot_correct = np.asarray(tfmot_correct, bool)
  if tfadmm_correct.shape != tfmot_correct.shape or not tfadmm_correct.size:
    raise ValueError('Both models must be scored on the same, nonempty set '
                     f'of examples; got {tfadmm_correct.shape} and '
                     f'{tfmot_correct.shape}.')
  per_example = tfadmm_correct.astype(float) - tfmot_correct
  return {
      'examples': int(per_example.size),
      'only_tfadmm_right': int(np.sum(per_example > 0)),
      'only_tfmot_right': int(np.sum(per_example < 0)),
      'difference_points': 100 * float(per_example.mean()),
      'standard_error_points': 100 * float(per_example.std() /
                                           np.sqrt(per_example.size)),
  }


def _test_predictions(content, data):
  """(outputs, labels, runtime) of the .tflite `content` on the test set."""
  test = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test))
  return evaluate.predict(content, test)


def _test_hits(tflite_path, data):
  """Per test example: does the .tflite at `tflite_path` get it right?"""
  with open(tflite_path, 'rb') as f:
    outputs, labels, _ = _test_predictions(f.read(), data)
  return evaluate.top1_hits(outputs, labels)


# Training.


def _steps_per_epoch(data, batch_size):
  return -(-len(data.x_train) // batch_size)


def _compile(model, settings, decay_steps=None):
  """Adam at the run's learning rate, cosine-decayed over `decay_steps`
  when given (ProgressiveRun._compile)."""
  learning_rate = settings['learning_rate']
  if decay_steps:
    learning_rate = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=decay_steps)
  return models.compile_for_classification(
      model, keras.optimizers.Adam(learning_rate))


def _fit(model, data, settings, unit, epochs, callbacks=()):
  """model.fit on the run's training split, seeded per unit, with the run's
  shifted batches (ProgressiveRun._fit)."""
  keras.utils.set_random_seed(settings['seed'] + zlib.crc32(unit.encode()))
  if settings.get('shift_pixels'):
    inputs = dict(x=datasets.shifted_batches(
        data.x_train, data.y_train, settings['batch_size'],
        settings['shift_pixels'], settings['seed']))
  else:
    inputs = dict(x=data.x_train, y=data.y_train,
                  batch_size=settings['batch_size'])
  model.fit(**inputs, epochs=epochs, verbose=1 if sys.stdout.isatty() else 2,
            callbacks=list(callbacks))


def _kernels(model):
  """{layer name: kernel values}, looking inside tfmot wrappers.

  Reads the kernel variable: a QuantizeWrapper replaces the layer's `kernel`
  attribute by its fake-quantized tensor, and PCQAT writes the clustered
  weights into the variable at each training step, which inference (and so
  the converter) reads.
  """
  kernels = {}
  for layer in model.layers:
    inner = getattr(layer, 'layer', layer)
    for variable in layer.weights:  # the wrapper tracks the variable
      if variable.name.split(':')[0].split('/')[-1] == 'kernel':
        kernels[inner.name] = variable.numpy()
        break
  return kernels


def _distinct_per_channel(kernel):
  """Most distinct nonzero values in one output channel (last axis)."""
  channels = kernel.reshape(-1, kernel.shape[-1]).T
  return max(int(np.unique(c[c != 0]).size) for c in channels)


def _model_facts(model, data):
  kernels = _kernels(model)
  return {
      'test_accuracy': trainer.accuracy(model, data.x_test, data.y_test),
      'val_accuracy': trainer.accuracy(model, data.x_val, data.y_val),
      'nonzero': {n: int(np.count_nonzero(k)) for n, k in kernels.items()},
      'distinct_nonzero_values': {
          n: int(np.unique(k[k != 0]).size) for n, k in kernels.items()},
      # tfmot's PCQAT trains per-channel centroids for a Conv2D kernel
      # whose channels all hold about as many distinct values.
      'max_distinct_nonzero_values_per_channel': {
          n: _distinct_per_channel(k) for n, k in kernels.items()},
  }


def _prune(dense, data, settings, targets, epochs, frequency):
  steps = _steps_per_epoch(data, settings['batch_size'])
  end_step = ramp_end_step(epochs['prune_ramp'], steps, frequency)

  def wrap(layer):
    target = targets.get(layer.name)
    if target is None or target['nonzero'] >= target['total']:
      return layer  # tf-admm kept every weight of it
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target['sparsity'],
        begin_step=0, end_step=end_step, frequency=frequency)
    return tfmot.sparsity.keras.prune_low_magnitude(
        layer, pruning_schedule=schedule)

  pruned = _compile(keras.models.clone_model(dense, clone_function=wrap),
                    settings)
  _fit(pruned, data, settings, 'tfmot_prune_ramp', epochs['prune_ramp'],
       [tfmot.sparsity.keras.UpdatePruningStep()])
  if epochs['prune_retrain']:  # the schedule has ended: the masks stay
    _compile(pruned, settings, epochs['prune_retrain'] * steps)
    _fit(pruned, data, settings, 'tfmot_prune_retrain',
         epochs['prune_retrain'], [tfmot.sparsity.keras.UpdatePruningStep()])
  return tfmot.sparsity.keras.strip_pruning(pruned)


def _cluster(pruned, data, settings, clusters, epochs):
  init = getattr(tfmot.clustering.keras.CentroidInitialization,
                 CENTROID_INIT.value.upper())
  keras.utils.set_random_seed(settings['seed'] + zlib.crc32(b'cluster_init'))

  def wrap(layer):
    if layer.name not in clusters:
      return layer
    return tfmot.clustering.keras.cluster_weights(
        layer, number_of_clusters=clusters[layer.name]['clusters'],
        cluster_centroids_init=init,
        preserve_sparsity=clusters[layer.name]['preserve_sparsity'])

  clustered = _compile(keras.models.clone_model(pruned, clone_function=wrap),
                       settings,
                       epochs['cluster'] * _steps_per_epoch(
                           data, settings['batch_size']))
  _fit(clustered, data, settings, 'tfmot_cluster', epochs['cluster'])
  return tfmot.clustering.keras.strip_clustering(clustered)


class _PcqatScheme(
    tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme):
  """tfmot's PCQAT scheme, with a weight quantizer of its own per layer.

  tfmot 0.8's registry hands ONE cluster-preserving weight quantizer to
  every Dense layer and one to every Conv2D, and a quantizer that builds for
  a layer without zeros turns its own preserve_sparsity off, for good: one
  unpruned Dense layer would switch sparsity preservation off for the pruned
  Dense layers too (their zero centroid then drifts and pruned weights come
  back). A copy per layer keeps each layer's choice to itself.
  """

  def __init__(self):
    super().__init__(preserve_sparsity=True)

  def get_quantize_registry(self):
    registry = super().get_quantize_registry()
    shared = registry.get_quantize_config

    def per_layer(layer):
      config = shared(layer)
      if getattr(config, 'weight_quantizer', None) is not None:
        config.weight_quantizer = copy.deepcopy(config.weight_quantizer)
      return config

    registry.get_quantize_config = per_layer
    return registry


def _pcqat(clustered, data, settings, epochs):
  annotated = tfmot.quantization.keras.quantize_annotate_model(clustered)
  qat = tfmot.quantization.keras.quantize_apply(annotated, _PcqatScheme())
  _compile(qat, settings,
           epochs['pcqat'] * _steps_per_epoch(data, settings['batch_size']))
  _fit(qat, data, settings, 'tfmot_pcqat', epochs['pcqat'])
  # The clustered kernels back in the layers; the QAT wrappers (and so the
  # int8 ranges) stay.
  return tfmot.experimental.combine.strip_clustering_cqat(qat)


def _to_tflite(qat_model):
  """Full int8 .tflite of a QAT model (its fake-quant ranges give the
  activation scales; float input and output, as tf-admm's file)."""
  converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  return converter.convert()


def _tflite_facts(content, data):
  outputs, labels, runtime = _test_predictions(content, data)
  return dict(tflite_report.sizes(content), runtime=runtime,
              accuracy=evaluate.top1_accuracy(outputs, labels))


# The run's settings that tfmot's phases train with (`_compile`, `_fit`);
# the others (tf-admm's stages, its quantization) leave the phases as they
# are.
TRAINING_SETTINGS = ('learning_rate', 'batch_size', 'shift_pixels', 'seed')


def phase_inputs(start, settings, frequency, epochs, clusters, centroid_init,
                 micro=False):
  """{phase: what it is made from}: `start` (the pretrained run, data and
  kept counts), the run's TRAINING_SETTINGS, and each phase's own settings
  with every earlier phase's (PCQAT's: whether its TFLite Micro file is
  made too)."""
  prune = dict(start,
               settings={k: settings.get(k) for k in TRAINING_SETTINGS},
               prune_frequency=frequency,
               prune_ramp_epochs=epochs['prune_ramp'],
               prune_retrain_epochs=epochs['prune_retrain'])
  cluster = dict(prune, clusters=clusters, centroid_init=centroid_init,
                 cluster_epochs=epochs['cluster'])
  return {'prune': prune, 'cluster': cluster,
          # Work folders from before --micro have no key: they resume.
          'pcqat': dict(cluster, pcqat_epochs=epochs['pcqat'],
                        **({'micro': True} if micro else {}))}


class Phases:
  """The tfmot phases in `work_dir`, each saved when finished with the
  inputs it was made from (its own settings and every earlier phase's): a
  phase counts as done only while those are unchanged, so changing, say,
  --pcqat_epochs redoes PCQAT alone."""

  def __init__(self, work_dir, inputs, build_model, log=print):
    self.work_dir = work_dir
    self.inputs = json.loads(json.dumps(inputs))  # {phase: inputs}
    self.build_model = build_model
    self.log = log
    os.makedirs(work_dir, exist_ok=True)

  def folder(self, phase):
    return os.path.join(self.work_dir, phase)

  def done(self, phase):
    inputs_file = os.path.join(self.folder(phase), 'inputs.json')
    if not os.path.exists(os.path.join(self.folder(phase), 'metrics.json')):
      return False
    found = run_files.read_json(inputs_file) if os.path.exists(inputs_file) else {}
    wanted = self.inputs[phase]
    if found != wanted:
      differing = sorted(k for k in set(found) | set(wanted)
                         if found.get(k) != wanted.get(k))
      self.log(f'redoing {phase}: its inputs changed ({", ".join(differing)})')
      return False
    return True

  def metrics(self, phase):
    return run_files.read_json(os.path.join(self.folder(phase), 'metrics.json'))

  def load(self, phase):
    model = self.build_model()
    model.load_weights(os.path.join(self.folder(phase), 'model.weights.h5'))
    return model

  def save(self, phase, model, metrics, tflite=None):
    def write(temporary):
      model.save_weights(os.path.join(temporary, 'model.weights.h5'))
      if tflite is not None:
        run_files.write_bytes(
            os.path.join(temporary, 'tfmot_pcqat_int8.tflite'), tflite)
      run_files.write_json(os.path.join(temporary, 'metrics.json'), metrics)
      run_files.write_json(os.path.join(temporary, 'inputs.json'),
                           self.inputs[phase])

    folder = self.folder(phase)
    shutil.rmtree(folder, ignore_errors=True)
    run_files.write_folder_atomically(folder, write)


def _run_tfmot(phases, dense, data, settings, targets, clusters, epochs,
               frequency):
  """Runs (or resumes) the phases; returns {phase: metrics}. PCQAT's
  metrics hold its TFLite Micro report ('micro') where its inputs ask."""
  redo = not phases.done('prune')  # and then every later phase
  if redo:
    start = time.time()
    pruned = _prune(dense, data, settings, targets, epochs, frequency)
    metrics = dict(_model_facts(pruned, data),
                   epochs=epochs['prune_ramp'] + epochs['prune_retrain'],
                   seconds=time.time() - start)
    phases.save('prune', pruned, metrics)
    _log(f'prune: test accuracy {metrics["test_accuracy"]:.4f}, nonzero '
         f'{metrics["nonzero"]} ({metrics["seconds"]:.0f} s)')
  redo = redo or not phases.done('cluster')
  if redo:
    start = time.time()
    clustered = _cluster(phases.load('prune'), data, settings, clusters,
                         epochs)
    metrics = dict(_model_facts(clustered, data), epochs=epochs['cluster'],
                   seconds=time.time() - start)
    phases.save('cluster', clustered, metrics)
    _log(f'cluster: test accuracy {metrics["test_accuracy"]:.4f}, distinct '
         f'nonzero values {metrics["distinct_nonzero_values"]} '
         f'({metrics["seconds"]:.0f} s)')
  if redo or not phases.done('pcqat'):
    start = time.time()
    qat = _pcqat(phases.load('cluster'), data, settings, epochs)
    content = _to_tflite(qat)
    metrics = dict(_model_facts(qat, data), epochs=epochs['pcqat'],
                   seconds=time.time() - start,
                   tflite=_tflite_facts(content, data))
    if phases.inputs['pcqat'].get('micro'):  # calibrated as the run's file
      metrics['micro'] = micro.export_micro(
          qat, data.x_test, data.y_test,
          tf.data.Dataset.from_tensor_slices(data.x_train[:500]))
      _log(f'pcqat: {micro.summary_line(metrics["micro"])}')
    phases.save('pcqat', qat, metrics, content)
    _log(f'pcqat: test accuracy {metrics["test_accuracy"]:.4f}, int8 '
         f'.tflite {metrics["tflite"]["gzip_bytes"]:,} bytes gzipped, LiteRT '
         f'accuracy {metrics["tflite"]["accuracy"]:.4f} '
         f'({metrics["seconds"]:.0f} s)')
  return {phase: phases.metrics(phase) for phase in PHASES}


# Results.


def _machine():
  return {'platform': platform.platform(),
          'processor': platform.processor() or platform.machine(),
          'cpus': os.cpu_count(), 'python': platform.python_version(),
          'tensorflow': tf.__version__,
          'tfmot': getattr(tfmot, '__version__', 'unknown')}


def markdown(result):
  """RESULTS.md: the two files side by side, the command, the machine and
  the verdict, all from `result`."""
  admm, other = result['tfadmm'], result['tfmot']
  machine = result['machine']
  layers = list(admm['nonzero'])

  def per_layer(values):
    return ', '.join(f'{n} {values.get(n, "-"):,}'
                     if isinstance(values.get(n), int)
                     else f'{n} {values.get(n, "-")}' for n in layers)

  epochs = other['epochs']
  packed = '/'.join(f'INT{bits}'
                    for bits in sorted(set(admm['packed_bits'].values())))
  rows = [
      ('file', f'{admm["tflite_variant"]}.tflite ('
       + (f'packed {packed} weights' if packed else 'int8 weights') + ')',
       'PCQAT int8 .tflite'),
      ('.tflite bytes', f'{admm["bytes"]:,}', f'{other["bytes"]:,}'),
      ('gzip -9 bytes', f'{admm["gzip_bytes"]:,}',
       f'{other["gzip_bytes"]:,}'),
      ('LiteRT test accuracy', f'{100 * admm["tflite_accuracy"]:.2f}%',
       f'{100 * other["tflite_accuracy"]:.2f}%'),
      ('Keras test accuracy', f'{100 * admm["keras_accuracy"]:.2f}%',
       f'{100 * other["keras_accuracy"]:.2f}%'),
      ('compression rate (kernels)', f'{admm["compression_rate"]:.1f}x',
       f'{other["compression_rate"]:.1f}x'),
      ('nonzero kernel weights', per_layer(admm['nonzero']),
       per_layer(other['nonzero'])),
      ('nonzero values per layer',
       ', '.join(f'{n} {admm["levels"][n]}' for n in layers),
       ', '.join(f'{n} {other["clusters"][n]} clusters'
                 + (' (one zero)' if other['preserve_sparsity'][n] else '')
                 for n in layers)),
      ('post-pretraining epochs',
       f'{admm["epochs"]["total"]} ({admm["epochs"]["ramp"]} ADMM ramp + '
       f'{admm["epochs"]["retrain"]} retrain + '
       f'{admm["epochs"]["quantization"]} quantization)',
       f'{epochs["total"]} ({epochs["prune_ramp"]} prune ramp + '
       f'{epochs["prune_retrain"]} at final mask + {epochs["cluster"]} '
       f'cluster + {epochs["pcqat"]} PCQAT)'),
  ]
  lines = [
      '# tf-admm against tfmot collaborative optimization', '',
      f'**{result["verdict"]}**', '',
      f'tfmot gzip / tf-admm gzip = '
      f'{_floor2(result["comparison"]["gzip_ratio_tfmot_over_tfadmm"])} '
      '(rounded down); LiteRT '
      f'accuracy difference (tf-admm - tfmot) '
      f'{result["comparison"]["accuracy_difference_points"]:+.2f} points.',
      '', _paired_line(result['comparison']['paired']), '',
      '| | tf-admm | tfmot (prune -> cluster -> PCQAT) |', '|---|---|---|']
  lines += [f'| {a} | {b} | {c} |' for a, b, c in rows]
  if 'micro' in admm:
    lines += ['', 'TensorFlow Lite for Microcontrollers (`tflite_export.micro`'
              ': full int8, LUT-compressed kernels, scored in the TFLM '
              'interpreter):', ''] + micro_rows(admm['micro'], other['micro'])
  lines += [
      '', 'tfmot phases:', '',
      '| phase | epochs | Keras test accuracy | val accuracy | nonzero | '
      'distinct nonzero values (most in one output channel) | seconds |',
      '|---|---:|---:|---:|---|---|---:|']
  for phase, m in result['tfmot_phases'].items():
    per_channel = m['max_distinct_nonzero_values_per_channel']
    distinct = ', '.join(
        f'{n} {m["distinct_nonzero_values"][n]:,} ({per_channel[n]:,})'
        for n in layers if n in per_channel)
    lines.append(
        f'| {phase} | {m["epochs"]} | {100 * m["test_accuracy"]:.2f}% | '
        f'{100 * m["val_accuracy"]:.2f}% | {per_layer(m["nonzero"])} | '
        f'{distinct} | {m["seconds"]:.0f} |')
  lines += [
      '', f'Both start from the tf-admm run\'s pretrained weights '
      f'(`{result["admm_run"]}/dense`) and train on the same '
      f'{result["data"]["train_examples"]:,} examples '
      f'({result["data"]["validation_examples"]:,} held out, shift '
      f'{result["settings"]["shift_pixels"]} px) with Adam at '
      f'{result["settings"]["learning_rate"]:g}, batch '
      f'{result["settings"]["batch_size"]}. Equal epoch totals: '
      f'{"yes" if result["equal_epochs"] else "NO"}. tfmot\'s kept counts equal '
      f'tf-admm\'s after pruning: '
      f'{"yes" if result["equal_kept_counts_after_pruning"] else "NO"}; in '
      f'the final file: {"yes" if result["equal_kept_counts"] else "NO"}'
      + ('' if result['equal_kept_counts'] else
         ' (clustering with preserve_sparsity zeroes for good the kept '
         'weights whose nearest initial centroid is the zero one)')
      + '.', '',
      f'Command: `{result["command"]}`', '',
      f'Machine: {machine["cpus"]} CPUs ({machine["processor"]}, '
      f'{machine["platform"]}), Python {machine["python"]}, TensorFlow '
      f'{machine["tensorflow"]}, tfmot {machine["tfmot"]}; '
      f'{result["seconds"]:.0f} s for this command ({result["measured"]}); '
      f'the tfmot phases took {result["tfmot_train_seconds"]:.0f} s when '
      'trained (a rerun reuses the phases whose inputs are unchanged).', '']
  return '\n'.join(lines)


def micro_rows(admm, other):
  """The Markdown table of both sides' TFLite Micro reports."""
  def bits(report):
    return ', '.join(f'{name} {b or "int8"}'
                     for name, b in report['lut_bits'].items())

  rows = [('flash bytes (the file as stored)', 'flash_bytes', '{:,}'),
          ('arena bytes', 'arena_bytes', '{:,}'),
          ('TFLM test accuracy', 'accuracy', '{:.2%}'),
          ('int8 file before LUT compression', 'int8_bytes', '{:,}')]
  lines = ['| | tf-admm | tfmot |', '|---|---:|---:|']
  lines += [f'| {label} | {fmt.format(admm[key])} | '
            f'{fmt.format(other[key])} |' for label, key, fmt in rows]
  return lines + [f'| LUT index bits | {bits(admm)} | {bits(other)} |']


def _paired_line(paired):
  return (
      f'Image by image (LiteRT, {paired["examples"]:,} test images): tf-admm '
      f'alone is right on {paired["only_tfadmm_right"]}, tfmot alone on '
      f'{paired["only_tfmot_right"]}; the accuracy difference '
      f'{paired["difference_points"]:+.2f} points has a standard error of '
      f'{paired["standard_error_points"]:.2f} points: a difference within '
      f'two standard errors (±{2 * paired["standard_error_points"]:.2f}) is '
      'not significant at about the 5% level.')


def results_dir(settings):
  """--results_dir, else the tree's folder for the run's seed."""
  return RESULTS_DIR.value or os.path.join(
      os.path.dirname(__file__), 'results', 'collaborative', 'one_round',
      f'seed{settings["seed"]}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not ADMM_RUN.value:
    raise app.UsageError('--admm_run is required.')
  logging.set_verbosity(logging.WARNING)
  start = time.time()
  try:
    run, report = read_run(ADMM_RUN.value)
    settings = run['settings']
    targets = layer_targets(report)
    clusters = cluster_counts(report, targets, parse_bits(BITS.value),
                              ZERO_CLUSTER.value)
    admm_epochs = tfadmm_epochs(run, report)
    epochs = phase_epochs(admm_epochs, PRUNE_RAMP_EPOCHS.value,
                          PRUNE_RETRAIN_EPOCHS.value, CLUSTER_EPOCHS.value,
                          PCQAT_EPOCHS.value)
    total, validation = split_sizes(run, report, TRAIN_EXAMPLES.value,
                                    VALIDATION_EXAMPLES.value)
    if micro_flag.MICRO.value and 'micro' not in report:
      raise ValueError(f'{ADMM_RUN.value!r} has no TFLite Micro file (its '
                       'report has no "micro"): rerun its command with '
                       '--micro, which exports it without retraining.')
  except ValueError as error:
    sys.exit(f'compare_collaborative: error: {error}')
  epochs['total'] = sum(epochs.values())
  admm_epochs['total'] = admm_epochs['pruning'] + admm_epochs['quantization']
  frequency = PRUNE_FREQUENCY.value or settings['prune_every_steps']

  # The run's data, exactly as examples/prune_mnist.py took them.
  if not FLAGS['dataset'].present:
    FLAGS.dataset = run.get('dataset', 'mnist')
  dataset = dataset_flags.load(input_shape=(28, 28, 1))
  if total:
    dataset.x_train = dataset.x_train[:total]
    dataset.y_train = dataset.y_train[:total]
  (x, y), (x_val, y_val) = dataset.split_validation(
      validation / len(dataset.x_train), seed=0)
  data = progressive.Data(x, y, x_val, y_val, dataset.x_test, dataset.y_test)
  if run.get('train_examples') not in (None, len(x)):
    sys.exit(f'compare_collaborative: error: the split gives {len(x)} '
             f'training examples, the run trained on {run["train_examples"]}; '
             'give --train_examples and --validation_examples as the run '
             'did.')

  def build_model():
    return models.build(run['model'], dataset.input_shape,
                        dataset.num_classes)

  dense = build_model()
  dense.load_weights(os.path.join(ADMM_RUN.value, 'dense',
                                  'model.weights.h5'))
  # Same validation examples: the dense model scores as when pretrained.
  dense_metrics = run_files.read_json(os.path.join(ADMM_RUN.value, 'dense',
                                          'metrics.json'))
  val_accuracy = trainer.accuracy(dense, data.x_val, data.y_val)
  if abs(val_accuracy - dense_metrics['val_accuracy']) > 1.5 / len(x_val):
    sys.exit(f'compare_collaborative: error: the pretrained model scores '
             f'{val_accuracy:.4f} on this validation split, '
             f'{dense_metrics["val_accuracy"]:.4f} on the run\'s: not the '
             'same split; give --train_examples and --validation_examples '
             'as the run did.')
  _log(f'{ADMM_RUN.value}: {run["model"]} at '
       f'{report["compression_rate"]:.1f}x; tfmot phases (epochs) {epochs}, '
       f'clusters {({n: c["clusters"] for n, c in clusters.items()})}, '
       f'{len(x)} training examples')

  phases = Phases(WORK_DIR.value, phase_inputs(
      {'admm_run': os.path.abspath(ADMM_RUN.value), 'dataset': FLAGS.dataset,
       'targets': targets, 'train_examples': len(x),
       'validation_examples': len(x_val)},
      settings, frequency, epochs, clusters, CENTROID_INIT.value,
      micro_flag.MICRO.value),
                  build_model, _log)
  by_phase = _run_tfmot(phases, dense, data, settings, targets, clusters,
                        epochs, frequency)

  final = by_phase['pcqat']
  tflite = report['storage']['tflite']
  variant = report['storage']['tflite_variant']
  nonzero = final['nonzero']
  kept = {n: t['nonzero'] for n, t in targets.items()}
  tfadmm = {
      'tflite_variant': variant,
      'packed_bits': report['tflite_variants'][variant].get('packed_bits',
                                                            {}),
      'bytes': tflite['bytes'], 'gzip_bytes': tflite['gzip_bytes'],
      'tflite_accuracy': tflite['accuracy'],
      'keras_accuracy': report['accuracy'],
      'compression_rate': report['compression_rate'],
      'nonzero': kept,
      'levels': {n: c['levels'] for n, c in clusters.items()},
      'weight_data_bytes': report['storage'].get('weight_data_bytes'),
      'with_index_bytes': report['storage'].get('with_index_bytes'),
      'int8_gzip_bytes': report.get('tflite_variants', {}).get(
          'int8', {}).get('gzip_bytes'),
      'epochs': admm_epochs,
  }
  tfmot_side = {
      'bytes': final['tflite']['bytes'],
      'gzip_bytes': final['tflite']['gzip_bytes'],
      'tflite_accuracy': final['tflite']['accuracy'],
      'tflite_runtime': final['tflite']['runtime'],
      'keras_accuracy': final['test_accuracy'],
      'compression_rate': (sum(t['total'] for t in targets.values()) /
                           max(1, sum(nonzero.get(n, 0) for n in targets))),
      'nonzero': nonzero,
      'clusters': {n: c['clusters'] for n, c in clusters.items()},
      'preserve_sparsity': {n: c['preserve_sparsity']
                            for n, c in clusters.items()},
      'epochs': epochs,
  }
  line, facts = verdict(
      {'gzip_bytes': tfadmm['gzip_bytes'],
       'accuracy': tfadmm['tflite_accuracy']},
      {'gzip_bytes': tfmot_side['gzip_bytes'],
       'accuracy': tfmot_side['tflite_accuracy']},
      ACCURACY_POINTS.value, SIZE_BAR.value)
  facts['paired'] = paired_difference(
      _test_hits(os.path.join(ADMM_RUN.value, 'tflite',
                              variant + '.tflite'), data),
      _test_hits(os.path.join(phases.folder('pcqat'),
                              'tfmot_pcqat_int8.tflite'), data))
  if abs(facts['paired']['difference_points'] -
         facts['accuracy_difference_points']) > 1e-6:
    sys.exit('compare_collaborative: error: the .tflite files score '
             'otherwise now than their reports say (the run or the work '
             'folder changed since); rerun the run\'s command, or use a new '
             '--work_dir.')
  if micro_flag.MICRO.value:
    tfadmm['micro'], tfmot_side['micro'] = report['micro'], final['micro']
    micro_line, facts['micro'] = verdict(
        {'flash_bytes': report['micro']['flash_bytes'],
         'accuracy': report['micro']['accuracy']},
        {'flash_bytes': final['micro']['flash_bytes'],
         'accuracy': final['micro']['accuracy']},
        ACCURACY_POINTS.value, None, size='flash_bytes', runtime='TFLM')
    line += ' TFLite Micro: ' + micro_line
  result = {
      'admm_run': ADMM_RUN.value, 'tfadmm': tfadmm, 'tfmot': tfmot_side,
      'tfmot_phases': by_phase, 'comparison': facts, 'verdict': line,
      'equal_epochs': epochs['total'] == admm_epochs['total'],
      'equal_kept_counts': all(nonzero.get(n) == k for n, k in kept.items()),
      'equal_kept_counts_after_pruning': all(
          by_phase['prune']['nonzero'].get(n) == k for n, k in kept.items()),
      'prune_frequency': frequency, 'centroid_init': CENTROID_INIT.value,
      'zero_cluster': ZERO_CLUSTER.value,
      'settings': settings,
      'data': {'train_examples': len(x), 'validation_examples': len(x_val),
               'test_examples': len(data.x_test),
               'dataset': FLAGS.dataset},
      'machine': _machine(), 'command': shlex.join(sys.argv),
      'measured': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
      'seconds': time.time() - start,
      'tfmot_train_seconds': sum(m['seconds'] for m in by_phase.values()),
  }
  folder = results_dir(settings)
  os.makedirs(folder, exist_ok=True)
  run_files.write_json(os.path.join(folder, 'results.json'), result)
  path = os.path.join(folder, 'RESULTS.md')
  run_files.write_bytes(path, markdown(result).encode())
  _log(line)
  _log(f'wrote {path} and results.json ({result["seconds"]:.0f} s)')


if __name__ == '__main__':
  app.run(main)
