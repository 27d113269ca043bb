r"""Progressive ADMM pruning of LeNet on MNIST-like data, from pretraining to
TFLite, with a report.

  python examples/prune_mnist.py --preset=demo
  python examples/prune_mnist.py --preset=paper --output_dir=runs/paper
  python examples/prune_mnist.py --preset=paper_quantized
  python examples/prune_mnist.py --preset=fast   # whole channels: faster
  python examples/prune_mnist.py --preset=demo --keras=3   # Keras 3 models

Rerunning the same command resumes an interrupted run from its last finished
stage, candidate or epoch. The report lands in --output_dir (report.json,
report.md, PNG plots, .tflite files).
"""

import os
import shlex
import sys
import time

from absl import app
from absl import flags
from absl import logging

import numpy as np
import tensorflow as tf

from tf_admm import biases
from tf_admm import constraints
from tf_admm import dataset_flags
from tf_admm import dead_units
from tf_admm import models
from tf_admm import progressive
from tf_admm import report as report_lib
from tf_admm import weights as weights_lib
from tflite_export import converter
from tflite_export import report as tflite_report

# The papers' quantization of LeNet-5: conv 3-bit, fc 2-bit, output 3-bit
# levels, one scale per layer as in the papers, shipped as packed INT4
# weights (fc1's {±q, ±2q} does not fit INT2's {-1, 0, 1}) with 8-bit
# fixed-point biases.
_LENET5_PAPER_LEVELS = dict(levels='uniform',
                            bits=['conv1:3', 'conv2:3', 'fc1:2', 'fc2:3'],
                            per_channel=False, bias_bits=8)

PRESETS = {
    # The README's quick run: >= 40x at >= 99.0%, then quantized with the
    # papers' levels (one 2.5-epoch round of ADMM, ten Z/U updates an epoch,
    # rho x1.2 at each, then every weight held) and shipped packed; 21
    # epochs (4 minutes on 2 cores at ~10 s an epoch, 11 on a slow day of
    # 23-29 s epochs).
    'demo': dict(model='lenet5', target_rate=50.0, first_rate=10.0,
                 stage_factor=5.0, candidates=1, pretrain_epochs=6,
                 admm_epochs=3, retrain_epochs=2, hold_fraction=1.0,
                 quantize_epochs_per_round=2.5, quantize_updates_per_epoch=10,
                 quantize_rho_growth=1.2, **_LENET5_PAPER_LEVELS),
    # The seed paper's headline (167x) and beyond, within 45 minutes here.
    # Each stage's ramp is itself many small partial prunings: one 28-epoch
    # stage to 167x did as well as four 12-epoch stages (98.95% against
    # 98.90%, both without the shifts).
    'paper': dict(model='lenet5', target_rate=250.0,
                  stage_rates=['167', '250'], candidates=1,
                  pretrain_epochs=10, admm_epochs=16, retrain_epochs=12,
                  shift_pixels=2),
    # The papers' pruning + quantization of LeNet-5: pruned to 167x, then
    # their levels (the 8-bit biases took the first seed's file from 6,808
    # to 5,866 gzip bytes), trained in one 8-epoch round of ADMM with
    # ten Z/U updates an epoch, rho x1.06 at each (0.01 -> 1.0), then 8
    # epochs with every weight held: 99.00-99.19% over six draws, twice
    # exactly at the floor. Rounds holding 30% each with one update a round
    # (the Z/U step giving way to the hard projection) cost up to 0.2
    # points more (benchmarks/NOTES.md).
    'paper_quantized': dict(model='lenet5', target_rate=167.0,
                            stage_rates=['167'], candidates=1,
                            pretrain_epochs=10, admm_epochs=16,
                            retrain_epochs=12, shift_pixels=2,
                            hold_fraction=1.0, quantize_epochs_per_round=8.0,
                            quantize_updates_per_epoch=10,
                            quantize_rho_growth=1.06,
                            **_LENET5_PAPER_LEVELS),
    # Every layer binarized ({-q, +q} per output channel), nothing pruned:
    # one 15-epoch round of ADMM with rho growing each epoch, then every
    # weight held on its sign while the scales q and the biases train for
    # 15 more (a 10-epoch round gave 98.98% on one seed; holding 30% a round
    # lost 0.3 points; benchmarks/NOTES.md).
    'binary': dict(model='lenet5', target_rate=1.0, pretrain_epochs=10,
                   shift_pixels=2, levels='binary', hold_fraction=1.0,
                   quantize_epochs_per_round=15.0, quantize_rho_growth=1.5,
                   train_scales=True),
    # Whole filters and units pruned for speed: 5x fewer MACs, cut down to a
    # smaller dense LeNet-5 and fine-tuned.
    'fast': dict(model='lenet5', structure='channels', target_macs=5.0,
                 stage_rates=['5'], candidates=1, pretrain_epochs=10,
                 admm_epochs=8, retrain_epochs=6, finetune_epochs=4,
                 shift_pixels=2),
}

PRESET = flags.DEFINE_enum('preset', None, list(PRESETS),
                           'Settings to start from; flags given explicitly '
                           'override them.')
MODEL = flags.DEFINE_string('model', 'lenet5', 'Network to prune: '
                            + ', '.join(models.MODELS) + '.')
OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Run folder (default runs/<preset or model>); '
    'rerunning with the same folder resumes.')
TARGET_RATE = flags.DEFINE_float('target_rate', 50.0, 'Final compression '
                                 'rate: prunable weights / nonzero weights. '
                                 '1 with --levels: no pruning.')
FIRST_RATE = flags.DEFINE_float('first_rate', 4.0, 'Rate of the first stage.')
STAGE_FACTOR = flags.DEFINE_float('stage_factor', 2.0, 'Approximate factor '
                                  'between consecutive stage rates.')
STAGE_RATES = flags.DEFINE_list(
    'stage_rates', None, 'Explicit stage rates, ending at --target_rate '
    '(instead of --first_rate and --stage_factor).')
CANDIDATES = flags.DEFINE_integer('candidates', 3, 'Pool size: partial models '
                                  'pushed to each next stage (1: plain '
                                  'progressive).')
PRETRAIN_EPOCHS = flags.DEFINE_integer('pretrain_epochs', 6, 'Dense epochs.')
ADMM_EPOCHS = flags.DEFINE_integer('admm_epochs', 2, 'ADMM epochs per stage '
                                   'and candidate.')
RETRAIN_EPOCHS = flags.DEFINE_integer('retrain_epochs', 3, 'Masked retraining '
                                      'epochs per stage and candidate.')
PRUNE_EVERY_STEPS = flags.DEFINE_integer('prune_every_steps', 50, 'Steps '
                                         'between the small hard prunes of '
                                         'each stage\'s ramp.')
LOOKAHEAD_STEPS = flags.DEFINE_integer('lookahead_steps', 200, 'How many steps '
                                       'ahead along the ramp the Z-step aims.')
RHO = flags.DEFINE_float('rho', 1e-2, 'ADMM penalty factor.')
LEARNING_RATE = flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning '
                                   'rate.')
BATCH_SIZE = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
SHIFT_PIXELS = flags.DEFINE_integer(
    'shift_pixels', 0, 'Augment training: shift each image by up to this many '
    'pixels, at random (0: off).')
VALIDATION_EXAMPLES = flags.DEFINE_integer(
    'validation_examples', 5000, 'Training examples held out to rank '
    'candidates (the test split is never used for choices).')
TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', None, 'Use only this many training examples (tests).')
TEST_EXAMPLES = flags.DEFINE_integer(
    'test_examples', None, 'Score on the first N test examples only (tests).')
SEED = flags.DEFINE_integer(
    'seed', 0, 'Random seed: of the initial weights, the order of the '
    'batches and the shifts (the validation split stays the same).')
PATTERN = flags.DEFINE_string(
    'pattern', None, 'N:M structured sparsity, such as 2:4: keep the N '
    'largest of every M consecutive weights along each kernel\'s input '
    'dimension. With --target_rate, at that rate too; without it, in one '
    'stage at M/N where every layer keeps N/M of its weights (weights the '
    'pattern does not fit keep their largest N/M; the report lists them).')
ALLOCATION = flags.DEFINE_enum(
    'allocation', 'profile', ['profile', 'global'],
    'Per-layer targets: "profile" scales the model\'s per-layer keep-ratio '
    'profile (tf_admm.models.KEEP_RATIO_PROFILES, or CHANNEL_PROFILES with '
    '--structure=channels) to the rate; "global" allocates by one magnitude '
    'threshold over the pretrained weights (with --structure=channels: over '
    'the channels\' norms relative to their layer\'s, toward --target_macs).')

LEVELS = flags.DEFINE_enum(
    'levels', None, list(constraints.LEVEL_KINDS),
    'Quantize the pruned model\'s kept weights onto levels: "uniform" '
    '{±1..±2^(bits-1)}·q, "ternary" {-q, 0, q}, "binary" {±q}, "kmeans" '
    '2^bits k-means levels. The zeros stay fixed.')
BITS = flags.DEFINE_list(
    'bits', None, 'Bits for --levels=uniform or kmeans, 1 to 8: one number '
    'for every layer, or layer:bits for each layer (conv1:3,conv2:3,fc1:2,'
    'fc2:3). Uniform levels of up to 3 bits are packed as INT4 (ternary and '
    'binary Dense kernels as INT2), of 4 to 7 bits as INT8; k-means levels '
    'are no grid and ship in the dynamic_int8 file.')
PER_CHANNEL = flags.DEFINE_bool(
    'per_channel', True, 'One level scale per output channel (what TFLite '
    'stores); --noper_channel: one per layer, as in the papers.')
HOLD_FRACTION = flags.DEFINE_float(
    'hold_fraction', 0.3, 'Quantization: share of the kept weights fixed on '
    'their levels after each round (those nearest them first).')
QUANTIZE_EPOCHS_PER_ROUND = flags.DEFINE_float(
    'quantize_epochs_per_round', 1.0, 'Quantization: epochs of each round.')
TRAIN_SCALES = flags.DEFINE_bool(
    'train_scales', False, 'Quantization: once every weight of a channel '
    '(of a layer, with --noper_channel) is held on its level, its codes '
    'stay fixed and it keeps training as one multiple of them (its scale).')
BIAS_BITS = flags.DEFINE_integer(
    'bias_bits', 0, 'Ship biases as fixed-point values of this many bits '
    '(one power-of-two step per layer, stored in float32; tf_admm.biases) '
    'with Dense units ordered by bias, for smaller files under gzip; the '
    'Keras accuracy is measured after. 0: float32 biases as trained.')
STRUCTURE = flags.DEFINE_enum(
    'structure', 'weights', ['weights', 'channels'],
    '"weights": prune single weights (smaller files); "channels": prune '
    'whole filters and units, then cut them out (tf_admm.surgery), leaving '
    'a smaller dense model that runs faster.')
TARGET_MACS = flags.DEFINE_float(
    'target_macs', None, 'With --structure=channels: the factor of fewer '
    'multiply-accumulates to reach (5: 5x fewer), instead of --target_rate; '
    '--first_rate, --stage_factor and --stage_rates then count MACs too.')
FINETUNE_EPOCHS = flags.DEFINE_integer(
    'finetune_epochs', 2, 'With --structure=channels: epochs of training '
    'after the pruned channels are cut out.')
QUANTIZE_RHO_GROWTH = flags.DEFINE_float(
    'quantize_rho_growth', 1.0, 'Quantization: rho\'s factor at each Z/U '
    'update (each round\'s hard projection restarts rho).')
QUANTIZE_UPDATES_PER_EPOCH = flags.DEFINE_integer(
    'quantize_updates_per_epoch', 1, 'Quantization: Z/U updates per epoch '
    '(one every steps-per-epoch / N steps, rounded); with '
    '--quantize_rho_growth > 1, several per round bring the free weights '
    'close to their levels before they are held.')
KERAS = flags.DEFINE_enum(
    'keras', '2', ['2', '3'],
    'Which Keras builds and trains the models: 2 (tf_keras; masked '
    'retraining through tfmot\'s pruning wrappers) or 3 (`import keras`, '
    'TensorFlow backend; masks held by constraints, export through Keras 3\'s '
    'LiteRT export). Keras 3 runs default to runs/<preset or model>_keras3.')
STRATEGY = flags.DEFINE_enum(
    'strategy', None, ['mirrored', 'multi_worker'],
    'Train under tf.distribute: mirrored (every GPU of this machine), or '
    'multi_worker (the hosts TF_CONFIG lists; run the same command on each, '
    'with an --output_dir they all see; the chief writes the run). Default: '
    'one device.')

FLAGS = flags.FLAGS


def _from_preset(name):
  return bool(PRESET.value) and not FLAGS[name].present and (
      name in PRESETS[PRESET.value])


def _value(name):
  """The flag's value, or the preset's where the flag was not given."""
  if _from_preset(name):
    return PRESETS[PRESET.value][name]
  return FLAGS[name].value


def _pattern():
  """The --pattern constraint, or None."""
  return constraints.NOutOfM.parse(PATTERN.value) if PATTERN.value else None


def _pattern_only():
  """--pattern without a rate (from the flags or the preset)."""
  return _pattern() is not None and not (FLAGS['target_rate'].present or
                                         _from_preset('target_rate'))


def _bits_flag():
  """How messages name the bits: the flag's, or the preset's."""
  return "the preset's --bits" if _from_preset('bits') else '--bits'


def _bits_by_layer(layers):
  """{layer: bits} from --bits; raises ValueError naming what is wrong."""
  given = _value('bits')
  flag = _bits_flag()
  if len(given) == 1 and ':' not in given[0]:
    return dict.fromkeys(layers, _whole_number(flag, given[0]))
  bits = {}
  for item in given:
    layer, colon, number = item.partition(':')
    if not colon:
      raise ValueError(f'{flag}: {item!r} is not layer:bits (such as fc1:2); '
                       'give one number for every layer, or layer:bits for '
                       'each.')
    if layer not in layers:
      raise ValueError(f'{flag} names {layer!r}, which is not a layer of the '
                       f'model; its layers are {", ".join(layers)}.')
    if layer in bits:
      raise ValueError(f'{flag} gives {layer!r} bits twice.')
    bits[layer] = _whole_number(flag, number, item)
  missing = [layer for layer in layers if layer not in bits]
  if missing:
    raise ValueError(f'{flag} gives no bits for {", ".join(missing)}: give '
                     'one number for every layer, or layer:bits for each.')
  return bits


def _whole_number(flag, text, item=None):
  """int(text); raises ValueError naming `flag` and the `item` text is from
  (none: text is the flag's only value)."""
  try:
    return int(text)
  except ValueError:
    raise ValueError(f'{flag}: {item or text!r} is not ' + (
        'layer:bits with whole bits, such as fc1:2.' if item else
        'a whole number of bits, or layer:bits for each layer.')) from None


def _quantization(layers):
  """{layer: Quantize} from --levels and --bits, or None."""
  levels = _value('levels')
  if levels is None:
    for name in ('bits', 'per_channel', 'train_scales'):
      if FLAGS[name].present:
        raise ValueError(f'--{name} needs --levels.')
    return None
  if levels in ('ternary', 'binary'):
    if FLAGS['bits'].present:  # a preset's bits give way to these levels
      raise ValueError(f'--levels={levels} has fixed levels; give no --bits.')
    bits = dict.fromkeys(layers)
  elif not _value('bits'):
    raise ValueError(f'--levels={levels} needs --bits (one number, or '
                     'layer:bits for each layer).')
  else:
    bits = _bits_by_layer(layers)
  quantization = {}
  for layer, layer_bits in bits.items():
    try:
      quantization[layer] = constraints.Quantize(
          levels, bits=layer_bits, per_channel=_value('per_channel'),
          train_scale=_value('train_scales'))
    except ValueError as error:
      raise ValueError(f'{_bits_flag()} for {layer}: {error}') from None
  return quantization


def _channels():
  return _value('structure') == 'channels'


def _check_structure():
  """Refuses flags that do not go with --structure."""
  if not _channels():
    for name in ('target_macs', 'finetune_epochs'):
      if FLAGS[name].present:
        raise ValueError(f'--{name} needs --structure=channels.')
    return
  for name in ('levels', 'pattern'):
    if _value(name):
      raise ValueError(f'--structure=channels prunes whole channels; it does '
                       f'not take --{name}.')
  if _value('target_macs') is not None and FLAGS['target_rate'].present:
    raise ValueError('Give --target_macs or --target_rate, not both.')
  if ALLOCATION.value == 'global' and _value('target_macs') is None:
    raise ValueError('--structure=channels allocates globally (by channel '
                     'norms) only toward --target_macs.')
  if _value('target_macs') is not None and not _value('target_macs') > 1:
    raise ValueError(f'--target_macs must be > 1 (5 means 5x fewer MACs), got '
                     f'{_value("target_macs")}.')


def _target():
  """The final rate: MACs with --target_macs, else weights."""
  if _channels() and _value('target_macs') is not None:
    return _value('target_macs')
  return _value('target_rate')


def _settings():
  """Settings from flags and preset; raises ValueError before any work."""
  if _value('model') not in models.MODELS:
    raise ValueError(f'Unknown --model {_value("model")!r}; choose one of '
                     f'{", ".join(models.MODELS)}.')
  _check_structure()
  target = _target()
  if target == 1 and _value('levels'):
    rates = []  # quantization alone
  elif not target > 1:
    raise ValueError(f'--target_rate must be > 1 (a compression factor such '
                     f'as 50; 1 only with --levels), got {target}.')
  elif _pattern_only():  # one stage at the pattern's own rate
    for name in ('stage_rates', 'allocation'):
      if FLAGS[name].present:
        raise ValueError(f'--pattern alone sets one stage with every layer at '
                         f'N/M; --{name} needs --target_rate too.')
    pattern = _pattern()
    rates = [pattern.m / pattern.n]
  elif _value('stage_rates'):
    try:
      rates = [float(r) for r in _value('stage_rates')]
    except ValueError:
      raise ValueError(f'--stage_rates must be numbers, got '
                       f'{_value("stage_rates")}.') from None
    if rates[-1] != target:
      raise ValueError(f'--stage_rates must end at the target ({target:g}),'
                       f' got {rates}.')
  else:
    rates = progressive.geometric_rates(min(_value('first_rate'), target),
                                        target, _value('stage_factor'))
  if _value('levels') is None:
    for name in ('hold_fraction', 'quantize_epochs_per_round',
                 'quantize_rho_growth', 'quantize_updates_per_epoch'):
      if FLAGS[name].present:
        raise ValueError(f'--{name} needs --levels.')
  return progressive.Settings(
      stage_rates=rates,
      candidates=_value('candidates'),
      pretrain_epochs=_value('pretrain_epochs'),
      admm_epochs=_value('admm_epochs'),
      retrain_epochs=_value('retrain_epochs'),
      prune_every_steps=_value('prune_every_steps'),
      lookahead_steps=_value('lookahead_steps'),
      rho=_value('rho'),
      learning_rate=_value('learning_rate'), batch_size=_value('batch_size'),
      shift_pixels=_value('shift_pixels'),
      hold_fraction=_value('hold_fraction'),
      quantize_epochs_per_round=_value('quantize_epochs_per_round'),
      quantize_rho_growth=_value('quantize_rho_growth'),
      quantize_updates_per_epoch=_value('quantize_updates_per_epoch'),
      rate_unit=('macs' if _channels() and _value('target_macs') is not None
                 else 'weights'),
      finetune_epochs=_value('finetune_epochs') if _channels() else 0,
      seed=_value('seed'))


def _strategy():
  """The --strategy; made before any other TensorFlow work, as
  MultiWorkerMirroredStrategy needs."""
  if STRATEGY.value and KERAS.value == '3':
    raise ValueError('--strategy trains Keras 2 models only; run it with '
                     '--keras=2.')
  if STRATEGY.value == 'multi_worker':
    if not os.environ.get('TF_CONFIG'):
      raise ValueError('--strategy=multi_worker reads the cluster from '
                       'TF_CONFIG, which is not set; set it on each host '
                       '(README, "Several machines").')
    return tf.distribute.MultiWorkerMirroredStrategy()
  if STRATEGY.value == 'mirrored':
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def _output_dir():
  name = PRESET.value or _value('model')
  if KERAS.value == '3':  # a run folder holds one Keras's models
    name += '_keras3'
  folder = OUTPUT_DIR.value or os.path.join('runs', name)
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as error:
    raise ValueError(f'Cannot create the output folder {folder!r}: '
                     f'{error.strerror}.') from None
  if not os.access(folder, os.W_OK | os.X_OK):
    raise ValueError(f'Cannot write to the output folder {folder!r}.')
  return folder


def _check_example_counts():
  if VALIDATION_EXAMPLES.value < 1:
    raise ValueError('--validation_examples must be >= 1.')
  for flag in (TRAIN_EXAMPLES, TEST_EXAMPLES):
    if flag.value is not None and flag.value < 1:
      raise ValueError(f'--{flag.name} must be >= 1 (or left out: all).')


def _data():
  """(dataset, progressive.Data): the dataset whole, and the splits the
  run uses."""
  dataset = dataset_flags.load(input_shape=(28, 28, 1))
  if TRAIN_EXAMPLES.value:
    dataset.x_train = dataset.x_train[:TRAIN_EXAMPLES.value]
    dataset.y_train = dataset.y_train[:TRAIN_EXAMPLES.value]
  fraction = VALIDATION_EXAMPLES.value / len(dataset.x_train)
  if fraction >= 0.5:
    raise ValueError('--validation_examples leaves too few training examples.')
  (x, y), (x_val, y_val) = dataset.split_validation(fraction, seed=0)
  return dataset, progressive.Data(x, y, x_val, y_val,
                                   dataset.x_test[:TEST_EXAMPLES.value],
                                   dataset.y_test[:TEST_EXAMPLES.value])


def _test_subset(dataset, data) -> dict:
  """{'test_examples': how many} where the run scores on part of the test
  split; {} where on all of it (so runs from before the flag resume)."""
  if len(data.x_test) < len(dataset.x_test):
    return {'test_examples': len(data.x_test)}
  return {}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  start = time.time()
  logging.set_verbosity(logging.WARNING)  # keep stage lines readable
  try:
    strategy = _strategy()
    pattern, pattern_only = _pattern(), _pattern_only()
    settings = _settings()
    _check_example_counts()
    model_name = _value('model')
    quantization = _quantization(list(models.keep_ratio_profile(model_name)))
    bias_bits = _value('bias_bits')
    if bias_bits:
      try:
        biases.check_bits(bias_bits)
      except ValueError as error:
        raise ValueError(f'--bias_bits: {error} (0: float32 biases)') from None
    output_dir = _output_dir()
    dataset, data = _data()
  except ValueError as error:
    sys.exit(f'prune_mnist: error: {error}')

  def build_model():
    return models.build(model_name, dataset.input_shape, dataset.num_classes,
                        keras_version=int(KERAS.value))

  final_rate = settings.stage_rates[-1] if settings.stage_rates else 1.0
  profile = models.keep_ratio_profile(model_name)
  if pattern_only:  # every layer at N/M
    profile = {name: 1.0 for name in profile}
  if _channels():
    profile = models.CHANNEL_PROFILES[model_name]
  if settings.rate_unit == 'macs' and ALLOCATION.value == 'global':
    allocate = progressive.norm_allocation(list(profile), final_rate)
  elif settings.rate_unit == 'macs':
    allocate = progressive.macs_allocation(profile, final_rate)
  elif ALLOCATION.value == 'global':
    allocate = progressive.global_allocation(final_rate)
  else:
    allocate = progressive.profile_allocation(profile, final_rate)
  constraint = pattern or constraints.KeepLargest()
  if _channels():
    constraint = constraints.KeepChannels()
  test_subset = _test_subset(dataset, data)
  run = progressive.ProgressiveRun(
      build_model, data, allocate, settings, output_dir,
      description={'model': model_name, 'dataset': dataset.name,
                   'train_examples': len(data.x_train),
                   **test_subset,
                   'allocation': ALLOCATION.value},
      log=lambda line: print(f'[tf_admm] {line}', flush=True),
      constraint=constraint, quantization=quantization, strategy=strategy)
  unit = ' fewer MACs' if settings.rate_unit == 'macs' else ''
  plan = ('stages at ' + ', '.join(f'{r:.1f}x{unit}'
                                   for r in settings.stage_rates)
          if settings.stage_rates else 'no pruning')
  if _channels():
    plan += ' pruning whole channels; then cut out and fine-tuned'

  if quantization:
    plan += '; then ' + ', '.join(
        f'{layer} {q.levels}' + (f' {q.bits}-bit' if q.bits else '')
        for layer, q in quantization.items())
  print(f'[tf_admm] {model_name} on {dataset.name}: {plan}; writing to '
        f'{output_dir}', flush=True)
  try:
    summary = run.run()
  except ValueError as error:
    sys.exit(f'prune_mnist: error: {error}')
  if not run.is_chief:
    print('[tf_admm] done; the chief writes the report and the .tflite files',
          flush=True)
    return

  final = summary['final_model']
  shipped, removed, cut = final, {}, {}
  if not _channels():  # a cut model has no dead units left
    removed = dead_units.remove_dead_units(final)
    for weight in weights_lib.prunable_weights(final):
      summary['final_masks'][weight.path] = np.logical_and(
          summary['final_masks'][weight.path], weight.variable.numpy() != 0)
    print('[tf_admm] units that cannot affect the output, weights zeroed: ' +
          ', '.join(f'{name}: {r["dead"]} without input, {r["unused"]} '
                    f'unread, {r["weights_zeroed"]} weights'
                    for name, r in removed.items()), flush=True)
    shipped, cut = dead_units.cut_out(final, data.x_val[:500])
    if cut:
      print('[tf_admm] the .tflite files are made without the units and '
            'channels that only hold zeros: ' + ', '.join(
                f'{name} {before} -> {after}'
                for name, (before, after) in cut.items()), flush=True)
  accuracy = progressive.accuracy(final, data.x_test, data.y_test)
  bias_rounding = {}
  if bias_bits:
    # A copy first: `shipped` may be `final` itself, which final.keras keeps
    # as trained.
    shipped = biases.units_sorted_by_bias(shipped)
    steps = biases.round_biases(shipped, bias_bits)
    bias_rounding = {'bits': bias_bits, 'steps': steps,
                     'accuracy_before': accuracy}
    accuracy = progressive.accuracy(shipped, data.x_test, data.y_test)
    print(f'[tf_admm] biases shipped as {bias_bits}-bit fixed-point values, '
          'Dense units ordered by bias: Keras test accuracy '
          f'{100 * bias_rounding["accuracy_before"]:.2f}% -> '
          f'{100 * accuracy:.2f}%', flush=True)
  test = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test))
  calibration = tf.data.Dataset.from_tensor_slices(data.x_train[:500])
  tflite = tflite_report.export_variants(
      shipped, test, calibration, dense_model=summary['dense_model'],
      output_dir=os.path.join(output_dir, 'tflite'))
  variant = 'int8' if _channels() else 'int8_sparse'
  speed = {}
  if _channels():
    speed = dict(
        macs=summary['shrunk']['macs'], params=summary['shrunk']['params'],
        latency_ms=tflite_report.latency_ms(
            {'dense': converter.convert(summary['dense_model']),
             'final': converter.convert(final)}, data.x_test[0]),
        latency_runtime='LiteRT float32 .tflite, 1 thread, batch 1, median')
  if quantization:
    try:
      tflite.update(tflite_report.export_packed(
          shipped, test, tflite['dense']['gzip_bytes'],
          os.path.join(output_dir, 'tflite')))
      variant = 'packed_weight_only'
      note = tflite_report.left_float_note(tflite)
      if note:
        print(f'[tf_admm] {note}', flush=True)
    except ValueError as error:  # no kernel on an integer grid (k-means)
      print(f'[tf_admm] no packed file: {error} The report ships the '
            'dynamic_int8 file instead: its int8 weights approximate the '
            'levels and shrink under gzip only; its accuracy is LiteRT\'s.',
            flush=True)
      variant = 'dynamic_int8'
  final.save(os.path.join(output_dir, 'final.keras'))
  report = report_lib.build(
      summary, tflite, variant,
      accuracy=accuracy, wall_seconds=time.time() - start,
      info={'dataset': dataset.name, 'model': model_name,
            **test_subset,
            'keras': int(KERAS.value), 'dead_units': removed,
            'shipped_widths': {name: list(w) for name, w in cut.items()},
            'bias_rounding': bias_rounding,
            **speed,
            'command': shlex.join(sys.argv), 'preset': PRESET.value,
            'settings': run.description['settings']})
  path = report_lib.write(output_dir, report,
                          tflite_report.format_table(tflite))
  print(tflite_report.format_table(tflite))
  by_kind = {}
  for weight_path, config in report['constraints'].items():
    by_kind.setdefault(report_lib.constraint_kind(config), []).append(
        weight_path)
  holds = 'yes' if report['constraints_hold'] else 'NO'
  if not by_kind:
    print('[tf_admm] constraints: none on the cut model, an ordinary dense '
          'network')
  else:
    print('[tf_admm] constraints: ' + '; '.join(
        f'{kind}: {", ".join(paths)}' for kind, paths in by_kind.items())
          + f' (every one holds: {holds})')
  print('[tf_admm] not pruned: ' + (', '.join(
      f'{u["path"]} ({u["size"]:,})' for u in report['unpruned']) or 'nothing'))
  stored = report['storage']
  print(f'[tf_admm] weight data {stored["weight_data_bytes"]:,.0f} bytes '
        f'({stored["weight_data_reduction"]:,.0f}x smaller than float32), '
        f'{stored["with_index_bytes"]:,.0f} with sparse indices '
        f'({stored["with_index_reduction"]:,.0f}x); {variant}.tflite '
        f'{stored["tflite"]["gzip_bytes"]:,} bytes gzipped, accuracy '
        f'{100 * stored["tflite"]["accuracy"]:.2f}%', flush=True)
  if speed:
    print(f'[tf_admm] MACs {speed["macs"]["dense"]:,} -> '
          f'{speed["macs"]["final"]:,} '
          f'({speed["macs"]["dense"] / speed["macs"]["final"]:.1f}x fewer); '
          f'parameters {speed["params"]["dense"]:,} -> '
          f'{speed["params"]["final"]:,}; float32 .tflite latency '
          f'{speed["latency_ms"]["dense"]:.3f} -> '
          f'{speed["latency_ms"]["final"]:.3f} ms ('
          f'{speed["latency_ms"]["dense"] / speed["latency_ms"]["final"]:.1f}'
          f'x faster; {speed["latency_runtime"]})', flush=True)
  print(f'[tf_admm] {report["compression_rate"]:.1f}x over the prunable '
        f'weights ({report["model_compression_rate"]:.1f}x over the whole '
        f'model) at test accuracy {100 * report["accuracy"]:.2f}% (dense '
        f'{100 * report["dense_accuracy"]:.2f}%), {report["epochs"]} epochs, '
        f'{report["wall_seconds"]:.0f} s. Report: {path}', flush=True)


if __name__ == '__main__':
  app.run(main)
