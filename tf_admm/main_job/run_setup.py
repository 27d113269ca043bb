"""How the main job's flags (and its --preset) become a run:
settings, constraints, allocation, data and output folder, each refused
with a message naming the flag before any work."""

import math
import os

from absl import flags
import tensorflow as tf

from tf_admm import allocations
from tf_admm import biases
from tf_admm import constraints
from tf_admm import dataset_flags
from tf_admm import levels as levels_lib
from tf_admm import models
from tf_admm import progressive
from tf_admm import run_settings

from tf_admm.main_job.presets import PRESETS
from tflite_export import tflm

FLAGS = flags.FLAGS


def from_preset(name):
  return bool(FLAGS.preset) and not FLAGS[name].present and (
      name in PRESETS[FLAGS.preset])


def value(name):
  """The flag's value, or the preset's where the flag was not given."""
  if from_preset(name):
    return PRESETS[FLAGS.preset][name]
  return FLAGS[name].value


def pattern():
  """The --pattern constraint, or None."""
  return constraints.NOutOfM.parse(FLAGS.pattern) if FLAGS.pattern else None


def pattern_only():
  """--pattern without a rate (from the flags or the preset)."""
  return pattern() is not None and not (FLAGS['target_rate'].present or
                                         from_preset('target_rate'))


def _bits_flag():
  """How messages name the bits: the flag's, or the preset's."""
  return "the preset's --bits" if from_preset('bits') else '--bits'


def _bits_by_layer(layers):
  """{layer: bits} from --bits; raises ValueError naming what is wrong."""
  given = value('bits')
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


def quantization(layers):
  """{layer: Quantize} from --levels and --bits, or None."""
  levels = value('levels')
  if levels is None:
    for name in ('bits', 'per_channel', 'train_scales'):
      if FLAGS[name].present:
        raise ValueError(f'--{name} needs --levels.')
    return None
  if not levels_lib.LEVEL_FAMILIES[levels].takes_bits:
    if FLAGS['bits'].present:  # a preset's bits give way to these levels
      raise ValueError(f'--levels={levels} has fixed levels; give no --bits.')
    bits = dict.fromkeys(layers)
  elif not value('bits'):
    raise ValueError(f'--levels={levels} needs --bits (one number, or '
                     'layer:bits for each layer).')
  else:
    bits = _bits_by_layer(layers)
  quantization = {}
  for layer, layer_bits in bits.items():
    try:
      quantization[layer] = constraints.Quantize(
          levels, bits=layer_bits, per_channel=value('per_channel'),
          train_scale=value('train_scales'))
    except ValueError as error:
      raise ValueError(f'{_bits_flag()} for {layer}: {error}') from None
  return quantization


def channels():
  return value('structure') == 'channels'


def _check_structure():
  """Refuses flags that do not go with --structure."""
  if not channels():
    for name in ('target_macs', 'finetune_epochs'):
      if FLAGS[name].present:
        raise ValueError(f'--{name} needs --structure=channels.')
    return
  if value('pattern'):
    raise ValueError('--structure=channels prunes whole channels; it does '
                     'not take --pattern.')
  if value('target_macs') is not None and FLAGS['target_rate'].present:
    raise ValueError('Give --target_macs or --target_rate, not both.')
  if FLAGS.allocation == 'global' and value('target_macs') is None:
    raise ValueError('--structure=channels allocates globally (by channel '
                     'norms) only toward --target_macs.')
  if value('target_macs') is not None and not value('target_macs') > 1:
    raise ValueError(f'--target_macs must be > 1 (5 means 5x fewer MACs), got '
                     f'{value("target_macs")}.')


def _target():
  """The final rate: MACs with --target_macs, else weights."""
  if channels() and value('target_macs') is not None:
    return value('target_macs')
  return value('target_rate')


def settings():
  """Settings from flags and preset; raises ValueError before any work."""
  for name in FLAGS:  # absl parses 'inf' and 'nan' as floats
    number = value(name)
    if isinstance(number, float) and not math.isfinite(number):
      raise ValueError(f'--{name} must be a finite number, got {number}.')
  if value('model') not in models.MODELS:
    raise ValueError(f'Unknown --model {value("model")!r}; choose one of '
                     f'{", ".join(models.MODELS)}.')
  _check_structure()
  target = _target()
  if target == 1 and value('levels'):
    rates = []  # quantization alone
  elif not target > 1:
    raise ValueError(f'--target_rate must be > 1 (a compression factor such '
                     f'as 50; 1 only with --levels), got {target}.')
  elif pattern_only():  # one stage at the pattern's own rate
    for name in ('stage_rates', 'allocation'):
      if FLAGS[name].present:
        raise ValueError(f'--pattern alone sets one stage with every layer at '
                         f'N/M; --{name} needs --target_rate too.')
    n_of_m = pattern()
    rates = [n_of_m.m / n_of_m.n]
  elif value('stage_rates'):
    try:
      rates = [float(r) for r in value('stage_rates')]
    except ValueError:
      rates = []
    if not rates or not all(math.isfinite(r) for r in rates):
      raise ValueError(f'--stage_rates must be finite numbers, got '
                       f'{value("stage_rates")}.')
    if rates[-1] != target:
      raise ValueError(f'--stage_rates must end at the target ({target:g}),'
                       f' got {rates}.')
  else:
    rates = run_settings.geometric_rates(min(value('first_rate'), target),
                                        target, value('stage_factor'))
  if value('levels') is None:
    for name in ('hold_fraction', 'quantize_epochs_per_round',
                 'quantize_rho_growth', 'quantize_updates_per_epoch'):
      if FLAGS[name].present:
        raise ValueError(f'--{name} needs --levels.')
  return progressive.Settings(
      stage_rates=rates,
      candidates=value('candidates'),
      pretrain_epochs=value('pretrain_epochs'),
      admm_epochs=value('admm_epochs'),
      retrain_epochs=value('retrain_epochs'),
      prune_every_steps=value('prune_every_steps'),
      lookahead_steps=value('lookahead_steps'),
      rho=value('rho'),
      learning_rate=value('learning_rate'), batch_size=value('batch_size'),
      shift_pixels=value('shift_pixels'),
      hold_fraction=value('hold_fraction'),
      quantize_epochs_per_round=value('quantize_epochs_per_round'),
      quantize_rho_growth=value('quantize_rho_growth'),
      quantize_updates_per_epoch=value('quantize_updates_per_epoch'),
      rate_unit=('macs' if channels() and value('target_macs') is not None
                 else 'weights'),
      finetune_epochs=value('finetune_epochs') if channels() else 0,
      seed=value('seed'))


def strategy():
  """The --strategy; made before any other TensorFlow work, as
  MultiWorkerMirroredStrategy needs."""
  if FLAGS.strategy == 'multi_worker' and FLAGS.keras == '3':
    raise ValueError('--strategy=multi_worker trains Keras 2 models only '
                     '(Keras 3.15\'s fit fails under '
                     'MultiWorkerMirroredStrategy); run it with --keras=2, '
                     'or --strategy=mirrored on one machine.')
  if FLAGS.strategy == 'multi_worker':
    if not os.environ.get('TF_CONFIG'):
      raise ValueError('--strategy=multi_worker reads the cluster from '
                       'TF_CONFIG, which is not set; set it on each host '
                       '(README, "Several machines").')
    return tf.distribute.MultiWorkerMirroredStrategy()
  if FLAGS.strategy == 'mirrored':
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def output_dir():
  """--output_dir, or the preset's (or model's) folder under runs/. The run
  creates it once every check has passed, so a refusal leaves nothing."""
  name = FLAGS.preset or value('model')
  if FLAGS.keras == '3':  # a run folder holds one Keras's models
    name += '_keras3'
  return FLAGS.output_dir or os.path.join('runs', name)


def check_example_counts():
  if FLAGS.validation_examples < 1:
    raise ValueError('--validation_examples must be >= 1.')
  for flag in (FLAGS['train_examples'], FLAGS['test_examples']):
    if flag.value is not None and flag.value < 1:
      raise ValueError(f'--{flag.name} must be >= 1 (or left out: all).')


def data():
  """(dataset, progressive.Data): the dataset whole, and the splits the
  run uses."""
  dataset = dataset_flags.load(input_shape=(28, 28, 1))
  if FLAGS.train_examples:
    dataset.x_train = dataset.x_train[:FLAGS.train_examples]
    dataset.y_train = dataset.y_train[:FLAGS.train_examples]
  fraction = FLAGS.validation_examples / len(dataset.x_train)
  if fraction >= 0.5:
    raise ValueError('--validation_examples leaves too few training examples.')
  (x, y), (x_val, y_val) = dataset.split_validation(fraction, seed=0)
  return dataset, progressive.Data(x, y, x_val, y_val,
                                   dataset.x_test[:FLAGS.test_examples],
                                   dataset.y_test[:FLAGS.test_examples])


def test_subset(dataset, data) -> dict:
  """{'test_examples': how many} where the run scores on part of the test
  split; {} where on all of it (so runs from before the flag resume)."""
  if len(data.x_test) < len(dataset.x_test):
    return {'test_examples': len(data.x_test)}
  return {}


def micro(log) -> bool:
  """Whether to export the TFLite Micro file: --micro (refused where
  tflite-micro is missing), or the preset's (then skipped there, saying
  so)."""
  if not value('micro'):
    return False
  try:
    tflm.check_available()
  except ValueError as error:
    if FLAGS['micro'].present:
      raise ValueError(f'--micro: {error}') from None
    log(f'no TFLite Micro file for this preset: {error}')
    return False
  return True


def bias_bits() -> int:
  """--bias_bits, checked (0: float32 biases)."""
  bits = value('bias_bits')
  if bits:
    try:
      biases.check_bits(bits)
    except ValueError as error:
      raise ValueError(f'--bias_bits: {error} (0: float32 biases)') from None
  return bits


def progressive_run(dataset, data, run_settings, quantization, folder,
                    distribution, log):
  """The `ProgressiveRun` the flags describe."""
  model_name = value('model')

  def build_model():
    return models.build(model_name, dataset.input_shape, dataset.num_classes,
                        keras_version=int(FLAGS.keras))

  allocate, constraint = allocation_and_constraint(model_name, run_settings)
  return progressive.ProgressiveRun(
      build_model, data, allocate, run_settings, folder,
      description={'model': model_name, 'dataset': dataset.name,
                   'train_examples': len(data.x_train),
                   **test_subset(dataset, data),
                   'allocation': FLAGS.allocation,
                   # Runs from before the flag resume without the key.
                   **({'profile': value('profile')} if value('profile')
                      else {})},
      log=log, constraint=constraint, quantization=quantization,
      strategy=distribution, overwrite=FLAGS.overwrite)


def _given_profile(layers):
  """{layer: relative keep ratio} from --profile (from the flags or the
  preset); raises ValueError naming what is wrong."""
  flag = ("the preset's --profile" if from_preset('profile')
          else '--profile')
  if FLAGS.allocation != 'profile' or pattern_only():
    raise ValueError(f'{flag} shapes --allocation=profile only, with a '
                     'rate (not --pattern alone).')
  profile = {}
  for item in value('profile'):
    layer, _, ratio = item.partition(':')
    try:
      profile[layer] = float(ratio)
    except ValueError:
      raise ValueError(f'{flag}: {item!r} is not layer:ratio (such as '
                       'fc1:0.5).') from None
    if layer not in layers:
      raise ValueError(f'{flag} names {layer!r}, which is not a pruned layer '
                       f'of the model; they are {", ".join(layers)}.')
    if not 0 < profile[layer] <= 1:
      raise ValueError(f'{flag}: {item!r} needs a ratio in (0, 1].')
  missing = [layer for layer in layers if layer not in profile]
  if missing:
    raise ValueError(f'{flag} gives no ratio for {", ".join(missing)}.')
  return profile


def allocation_and_constraint(model_name, run_settings):
  """(`allocate` for ProgressiveRun, the constraint the stages train
  toward) of the flags."""
  final_rate = (run_settings.stage_rates[-1] if run_settings.stage_rates
                else 1.0)
  profile = models.keep_ratio_profile(model_name)
  if pattern_only():  # every layer at N/M
    profile = {name: 1.0 for name in profile}
  if channels():
    profile = models.CHANNEL_PROFILES[model_name]
  if value('profile'):
    profile = _given_profile(list(profile))
  if run_settings.rate_unit == 'macs' and FLAGS.allocation == 'global':
    allocate = allocations.norm_allocation(list(profile), final_rate)
  elif run_settings.rate_unit == 'macs':
    allocate = allocations.macs_allocation(profile, final_rate)
  elif FLAGS.allocation == 'global':
    allocate = allocations.global_allocation(final_rate)
  else:
    allocate = allocations.profile_allocation(profile, final_rate)
  constraint = pattern() or constraints.KeepLargest()
  if channels():
    constraint = constraints.KeepChannels()
  return allocate, constraint


def plan(dataset_name, run_settings, quantization, folder):
  """The line saying what the run will do."""
  unit = ' fewer MACs' if run_settings.rate_unit == 'macs' else ''
  text = ('stages at ' + ', '.join(f'{r:.1f}x{unit}'
                                   for r in run_settings.stage_rates)
          if run_settings.stage_rates else 'no pruning')
  if channels():
    text += ' pruning whole channels; then cut out and fine-tuned'
  if quantization:
    text += '; then ' + ', '.join(
        f'{layer} {q.levels}' + (f' {q.bits}-bit' if q.bits else '')
        for layer, q in quantization.items())
  return f'{value("model")} on {dataset_name}: {text}; writing to {folder}'
