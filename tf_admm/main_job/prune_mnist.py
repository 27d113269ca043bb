r"""Progressive ADMM pruning of LeNet on MNIST-like data, from pretraining to
TFLite, with a report (`tf_admm.main_job.presets` has the presets):

  python examples/prune_mnist.py --preset=demo   # or paper, fast, ...
  tf-admm-prune --preset=demo --keras=3   # the same, installed; Keras 3

Rerunning the same command resumes an interrupted run. The report lands in
--output_dir (report.json, report.md, PNG plots, .tflite files).
"""

import shlex
import sys
import time

from absl import app
from absl import flags
from absl import logging

from tf_admm import dataset_flags
from tf_admm import levels
from tf_admm import models
from tf_admm.main_job import presets
# The flags of the stages and training, and of quantization, each group in
# its module: --help lists the main flags, --helpfull these by module.
from tf_admm.main_job import quantization_flags  # pylint: disable=unused-import
from tf_admm.main_job import run_setup
from tf_admm.main_job import training_flags  # pylint: disable=unused-import
from tflite_export import micro_flag
from tflite_export import ship

PRESET = flags.DEFINE_enum('preset', None, list(presets.PRESETS),
                           'Settings to start from; flags given explicitly '
                           'override them.')
MODEL = flags.DEFINE_string('model', 'lenet5', 'Network to prune: '
                            + ', '.join(models.MODELS) + '.')
OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Run folder (default runs/<preset or model>); '
    'rerunning with the same folder resumes.')
OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Write into --output_dir even if it holds files that '
    'are not a run\'s (refused by default, naming them).')
TARGET_RATE = flags.DEFINE_float('target_rate', 50.0, 'Final compression '
                                 'rate: prunable weights / nonzero weights. '
                                 '1 with --levels: no pruning.')
SEED = flags.DEFINE_integer(
    'seed', 0, 'Random seed: of the initial weights, the order of the '
    'batches and the shifts (the validation split stays the same).')
PATTERN = flags.DEFINE_string(
    'pattern', None, 'N:M structured sparsity, such as 2:4: keep the N '
    'largest of every M consecutive weights along each kernel\'s input '
    'dimension. With --target_rate, at that rate too; without it, in one '
    'stage at M/N where every layer keeps N/M of its weights (weights the '
    'pattern does not fit keep their largest N/M; the report lists them).')

LEVELS = flags.DEFINE_enum(
    'levels', None, list(levels.LEVEL_KINDS),
    'Quantize the pruned model\'s kept weights onto levels: "uniform" '
    '{±1..±2^(bits-1)}·q, "ternary" {-q, 0, q}, "binary" {±q}, "kmeans" '
    '2^bits k-means levels. The zeros stay fixed.')
BITS = flags.DEFINE_list(
    'bits', None, 'Bits for --levels=uniform or kmeans, 1 to 8: one number '
    'for every layer, or layer:bits for each layer (conv1:3,conv2:3,fc1:2,'
    'fc2:3). Uniform levels of up to 3 bits are packed as INT4 (ternary and '
    'binary Dense kernels as INT2), of 4 to 7 bits as INT8; k-means levels '
    'are no grid and ship in the dynamic_int8 file.')
STRUCTURE = flags.DEFINE_enum(
    'structure', 'weights', ['weights', 'channels'],
    '"weights": prune single weights (smaller files); "channels": prune '
    'whole filters and units, then cut them out (tf_admm.surgery), leaving '
    'a smaller dense model that runs faster.')
TARGET_MACS = flags.DEFINE_float(
    'target_macs', None, 'With --structure=channels: the factor of fewer '
    'multiply-accumulates to reach (5: 5x fewer), instead of --target_rate; '
    '--first_rate, --stage_factor and --stage_rates then count MACs too.')
KERAS = flags.DEFINE_enum(
    'keras', '2', ['2', '3'],
    'Which Keras builds and trains the models: 2 (tf_keras; masked '
    'retraining through tfmot\'s pruning wrappers) or 3 (`import keras`, '
    'TensorFlow backend; masks held by constraints, export through Keras 3\'s '
    'LiteRT export). Keras 3 runs default to runs/<preset or model>_keras3.')
# --micro, shared with the other scripts: listed in --help as this one's.
flags.adopt_module_key_flags(micro_flag)
STRATEGY = flags.DEFINE_enum(
    'strategy', None, ['mirrored', 'multi_worker'],
    'Train under tf.distribute: mirrored (every GPU of this machine), or '
    'multi_worker (Keras 2 models; the hosts TF_CONFIG lists; run the same '
    'command on each, '
    'with an --output_dir they all see; the chief writes the run). Default: '
    'one device.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  start = time.time()
  logging.set_verbosity(logging.WARNING)  # keep stage lines readable

  def log(line):
    print(f'[tf_admm] {line}', flush=True)

  try:
    strategy = run_setup.strategy()
    settings = run_setup.settings()
    run_setup.check_example_counts()
    quantization = run_setup.quantization(
        list(models.keep_ratio_profile(run_setup.value('model'))))
    bias_bits = run_setup.bias_bits()
    micro = run_setup.micro(log)
    output_dir = run_setup.output_dir()
    dataset, data = run_setup.data()
    run = run_setup.progressive_run(dataset, data, settings, quantization,
                                    output_dir, strategy, log)
    log(run_setup.plan(dataset.name, settings, quantization, output_dir))
    with run.store.locked():  # over the training and the shipping
      summary = run.run()
      if not run.store.is_chief:
        log('done; the chief writes the report and the .tflite files')
        return
      shipped = ship.ship(
          summary, data, output_dir, bias_bits=bias_bits, start=start,
          log=log, micro=micro,
          info={'dataset': dataset.name,
                'model': run_setup.value('model'),
                **run_setup.test_subset(dataset, data),
                'keras': int(KERAS.value),
                'command': shlex.join(sys.argv),
                'preset': PRESET.value,
                'settings': run.description['settings']})
  except ValueError as error:
    sys.exit(f'prune_mnist: error: {error}')
  print(shipped.table)
  for line in ship.summary_lines(shipped):
    log(line)


def run():
  """Runs the main job: the console script `tf-admm-prune`, and
  examples/prune_mnist.py."""
  dataset_flags.run_with_help(__name__, main)


if __name__ == '__main__':
  run()
