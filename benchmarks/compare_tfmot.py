r"""tf-admm against tfmot's gradual magnitude pruning, at equal epoch budgets.

  python benchmarks/compare_tfmot.py            # everything, as committed

For each model: one pretraining, shared by both methods. Then, for each
rate, each method prunes that pretrained model to the same per-layer targets
with the same budget: --admm_epochs epochs ramping the sparsity up along the
same cubic curve with a hard prune every 50 steps (tfmot: PolynomialDecay;
tf-admm: PolynomialRamp, whose ADMM Z-step aims 200 steps ahead so the next
weights to go are pulled toward zero first), then --retrain_epochs epochs at
the final mask. Both use Adam at the same learning rate and batch size,
constant while ramping, cosine-decayed while retraining. So the only
difference is the ADMM penalty.

Also measured: seconds per epoch of plain fit, fit under ADMM and fit with
tfmot wrappers (alternating, in one process, median of several epochs), and
.tflite size and single-example LiteRT latency per deployment format.

With --pattern=N:M (such as 2:4) the comparison is at that structured
pattern instead of --rates: tf-admm under the NOutOfM constraint, tfmot with
prune_low_magnitude(sparsity_m_by_n=...), both at M/N with every layer
keeping N/M (a layer the pattern does not fit, such as LeNet-5's first
convolution over one input channel, is magnitude-pruned to N/M by both), and
the final models are checked for groups holding more than N nonzeros.

  python benchmarks/compare_tfmot.py --models=lenet5 --pattern=2:4 \
      --timing_epochs=3 \
      --results_dir=benchmarks/results/tfmot_magnitude/nm24/seed0

Writes <model>.json, accuracy_vs_rate.png and RESULTS.md (with the folder's
NOTES.md appended, if it has one) into --results_dir, by default
benchmarks/results/tfmot_magnitude/default/seed<--seed>/. A committed result
gets its entry in benchmarks/results/manifest.json, and
`python benchmarks/render.py` renders benchmarks/reports/tfmot_magnitude.md.
"""

import json
import os
import platform
import shlex
import sys
import time
import warnings

from absl import app
from absl import flags
from absl import logging
import matplotlib

matplotlib.use('Agg')
from matplotlib import pyplot as plt
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

import tf_admm
from tf_admm import allocations
from tf_admm import constraints
from tf_admm import dataset_flags
from tf_admm import models
from tf_admm import progressive
from tf_admm import run_files
from tf_admm import run_steps
from tf_admm import trainer
from tf_admm.keras_compat import keras
from tflite_export import converter
from tflite_export import evaluate
from tflite_export import report as tflite_report

MODELS = flags.DEFINE_list('models', ['lenet5', 'lenet300_100'],
                           'Networks to compare.')
RATES = flags.DEFINE_list('rates', ['25', '50', '100', '167', '250'],
                          'Compression rates to compare at.')
PATTERN = flags.DEFINE_string(
    'pattern', None, 'Compare at this N:M pattern (such as 2:4) instead of '
    '--rates.')
PRETRAIN_EPOCHS = flags.DEFINE_integer('pretrain_epochs', 10, 'Dense epochs.')
ADMM_EPOCHS = flags.DEFINE_integer('admm_epochs', 8, 'Epochs ramping the '
                                   'sparsity up (both methods).')
RETRAIN_EPOCHS = flags.DEFINE_integer('retrain_epochs', 4, 'Epochs at the '
                                      'final mask (both methods).')
TIMING_EPOCHS = flags.DEFINE_integer('timing_epochs', 15, 'Epochs timed per '
                                     'method for the overhead measurement.',
                                     lower_bound=1)
LATENCY_RUNS = flags.DEFINE_integer('latency_runs', 500, 'Invocations per '
                                    'latency measurement.', lower_bound=1)
SEED = flags.DEFINE_integer('seed', 0, 'Random seed of both methods\' '
                            'training (pretraining included).', lower_bound=0)
TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', None, 'Use only this many training examples (tests).',
    lower_bound=1)
WORK_DIR = flags.DEFINE_string('work_dir', 'runs/benchmark', 'Resumable '
                               'training state.')
RESULTS_DIR = flags.DEFINE_string(
    'results_dir', None, 'Where the JSON results, the plot and RESULTS.md '
    'go. Default: benchmarks/results/tfmot_magnitude/default/seed<--seed>.')

FLAGS = flags.FLAGS


LEARNING_RATE = 1e-3
BATCH_SIZE = 128
PRUNE_EVERY = 50  # steps between the small hard prunes of both ramps


def _steps_per_epoch(examples):
  return -(-examples // BATCH_SIZE)


def _log(line):
  print(f'[benchmark] {line}', flush=True)


def _compile(model):
  return models.compile_for_classification(
      model, keras.optimizers.Adam(LEARNING_RATE))


def _data(dataset):
  (x, y), (x_val, y_val) = dataset.split_validation(5000 / 60000, seed=0)
  x, y = x[:TRAIN_EXAMPLES.value], y[:TRAIN_EXAMPLES.value]
  return progressive.Data(x, y, x_val, y_val, dataset.x_test, dataset.y_test)


def _settings(rate):
  return progressive.Settings(
      stage_rates=[rate], candidates=1, pretrain_epochs=PRETRAIN_EPOCHS.value,
      admm_epochs=ADMM_EPOCHS.value, retrain_epochs=RETRAIN_EPOCHS.value,
      prune_every_steps=PRUNE_EVERY, learning_rate=LEARNING_RATE,
      batch_size=BATCH_SIZE, seed=SEED.value)


def _pattern():
  return constraints.NOutOfM.parse(PATTERN.value) if PATTERN.value else None


def _run_name(method, rate):
  pattern = _pattern()
  return f'{method}_{rate:g}' + (f'_{pattern.n}of{pattern.m}' if pattern
                                 else '')


def _pattern_holds(model):
  """Whether every weight the pattern fits lies on it (projecting onto the
  pattern changes nothing); None without --pattern."""
  pattern = _pattern()
  if pattern is None:
    return None
  for weight in tf_admm.prunable_weights(model):
    if pattern.fits(weight):
      values = weight.variable.numpy()
      on_pattern = pattern.for_weight(weight, keep=None).project(values)
      if not np.array_equal(on_pattern.values, values):
        return False
  return True


def _admm_prune(model_name, dataset_name, data, rate, keep_ratios, dense_dir):
  """tf-admm to `keep_ratios` from the shared start; (run, summary, result)."""
  run = progressive.ProgressiveRun(
      lambda: models.build(model_name), data,
      lambda dense_model: keep_ratios, _settings(rate),
      os.path.join(WORK_DIR.value, model_name, _run_name('admm', rate)),
      description={'model': model_name, 'dataset': dataset_name}, log=_log,
      pretrained_dir=dense_dir,
      constraint=_pattern() or constraints.KeepLargest())
  summary = run.run()
  stage, = summary['stages']
  return run, summary, {'accuracy': stage['test_accuracy'],
                        'rate': stage['rate'], 'epochs': stage['epochs'],
                        'seconds': stage['seconds'],
                        'pattern_holds': _pattern_holds(
                            summary['final_model'])}


def _tfmot_prune(model_name, dense_weights, data, keep_ratios):
  """tfmot gradual magnitude pruning to the same per-layer targets."""
  keras.utils.set_random_seed(SEED.value)
  model = models.build(model_name)
  model.set_weights(dense_weights)
  steps_per_epoch = _steps_per_epoch(len(data.x_train))
  # tfmot prunes only at multiples of `frequency`: end the ramp on one, or
  # the final sparsity is never applied.
  end_step = ADMM_EPOCHS.value * steps_per_epoch // PRUNE_EVERY * PRUNE_EVERY

  pattern = _pattern()
  fits_pattern = {w.layer.name for w in tf_admm.prunable_weights(model)
                  if pattern and pattern.fits(w)}

  def wrap(layer):
    if layer.name not in keep_ratios:
      return layer
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=1 - keep_ratios[layer.name],
        begin_step=0, end_step=end_step, frequency=PRUNE_EVERY)
    # tfmot's m_by_n is (zeros, block): N kept of M is (M - N, M).
    m_by_n = ((pattern.m - pattern.n, pattern.m)
              if layer.name in fits_pattern else None)
    return tfmot.sparsity.keras.prune_low_magnitude(
        layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n)

  pruned = _compile(keras.models.clone_model(model, clone_function=wrap))
  start = time.time()
  pruned.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE,
             epochs=ADMM_EPOCHS.value, verbose=2,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  if RETRAIN_EPOCHS.value:  # the schedule has ended: the masks stay fixed
    models.compile_for_classification(pruned, keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(
            LEARNING_RATE, RETRAIN_EPOCHS.value * steps_per_epoch)))
    pruned.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE,
               epochs=RETRAIN_EPOCHS.value, verbose=2,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  stripped = tfmot.sparsity.keras.strip_pruning(pruned)
  return stripped, time.time() - start


def _epoch_seconds(model_name, dense_weights, data, keep_ratios):
  """Seconds per epoch of plain, ADMM and tfmot fit, interleaved.

  Both wall time and the process's CPU time (all threads) are recorded. On
  this machine wall time is bimodal: at random, an epoch runs as if on one
  core (CPU time about equal to wall time) instead of two, in every arm
  alike. CPU time, the work an epoch costs, does not move with that, so the
  ratios of CPU medians are the steady measure of overhead.
  """
  subset = (data.x_train[:20000], data.y_train[:20000])
  # Both pruning arms keep pruning through every timed epoch.
  ramp_steps = (TIMING_EPOCHS.value + 1) * _steps_per_epoch(len(subset[0]))

  def plain():
    model = _compile(models.build(model_name))
    model.set_weights(dense_weights)
    return model, []

  def admm():
    model, _ = plain()
    admm_model = _compile(tf_admm.attach_admm(
        model, per_layer={n: tf_admm.KeepRatio(r)
                          for n, r in keep_ratios.items()},
        rho=_settings(50.0).rho))
    # One ramp across all the one-epoch timing fits.
    return admm_model, [tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
        epochs=TIMING_EPOCHS.value + 1, prune_every_steps=PRUNE_EVERY))]

  def tfmot_wrapped():  # the same ramp
    model, _ = plain()
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.9, 0, ramp_steps,
                                                    frequency=PRUNE_EVERY)
    wrapped = _compile(tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=schedule))
    return wrapped, [tfmot.sparsity.keras.UpdatePruningStep()]

  makers = {'plain': plain, 'admm': admm, 'tfmot': tfmot_wrapped}
  built = {name: make() for name, make in makers.items()}
  names = list(makers)
  seconds = {clock: {name: [] for name in names} for clock in ('wall', 'cpu')}
  with warnings.catch_warnings():  # the ramp outlasts each fit on purpose
    warnings.simplefilter('ignore', tf_admm.ScheduleNotFinished)
    for model, callbacks in built.values():  # trace outside the timing
      model.fit(*subset, batch_size=BATCH_SIZE, epochs=1, verbose=0,
                callbacks=callbacks)
    for round_index in range(TIMING_EPOCHS.value):
      # Rotate who goes first: epoch times drift, and order effects cancel.
      shift = round_index % len(names)
      for name in names[shift:] + names[:shift]:
        model, callbacks = built[name]
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(*subset, batch_size=BATCH_SIZE, epochs=1, verbose=0,
                  callbacks=callbacks)
        seconds['wall'][name].append(time.perf_counter() - wall)
        seconds['cpu'][name].append(time.process_time() - cpu)
  summary = {'examples_per_epoch': len(subset[0]), 'seconds': seconds}
  for statistic, reduce in (('median', np.median), ('fastest', np.min)):
    for clock, by_arm in seconds.items():
      values = {name: float(reduce(t)) for name, t in by_arm.items()}
      summary[f'{statistic}_{clock}'] = dict(
          values, admm_vs_plain=values['admm'] / values['plain'],
          tfmot_vs_plain=values['tfmot'] / values['plain'])
  return summary


def _deployment(dense, pruned, data):
  """Sizes and single-example latency of each deployment format."""
  calibration = tf.data.Dataset.from_tensor_slices(data.x_train[:500])
  test = tf.data.Dataset.from_tensor_slices((data.x_test, data.y_test))
  formats = {
      'dense_float32': converter.convert(dense),
      'pruned_float32': converter.convert(pruned),
      'pruned_float32_sparse': converter.convert(pruned, sparse=True),
      'pruned_int8': converter.convert(pruned, converter.Quantization.INT8,
                                       representative_data=calibration),
      'pruned_int8_sparse': converter.convert(
          pruned, converter.Quantization.INT8, sparse=True,
          representative_data=calibration),
  }
  results = {}
  for name, content in formats.items():
    seconds, runtime = evaluate.latency_seconds(
        content, data.x_test[0], runs=LATENCY_RUNS.value, num_threads=1)
    results[name] = dict(tflite_report.sizes(content),
                         accuracy=evaluate.accuracy(content, test),
                         latency_ms=1000 * seconds, runtime=runtime,
                         threads=1)
  return results


def _compare(model_name, dataset, rates):
  data = _data(dataset)
  ramp_steps = ADMM_EPOCHS.value * _steps_per_epoch(len(data.x_train))
  if ramp_steps < PRUNE_EVERY:
    raise ValueError(f'--admm_epochs={ADMM_EPOCHS.value} gives a ramp of '
                     f'{ramp_steps} steps, fewer than the {PRUNE_EVERY} '
                     'between prunes: raise it.')
  sizes = allocations.layer_sizes(models.build(model_name))
  profile = models.KEEP_RATIO_PROFILES[model_name]
  pattern = _pattern()
  if pattern:  # every layer at N/M, the pattern's own rate
    profile = {name: 1.0 for name in profile}
    rates = [pattern.m / pattern.n]
  comparison, dense_dir = [], None
  for rate in rates:
    keep_ratios = tf_admm.targets.rescale(profile, sizes, rate)
    # The first run pretrains; the others start from its dense model.
    run, summary, admm_result = _admm_prune(model_name, dataset.name, data,
                                            rate, keep_ratios, dense_dir)
    dense_dir = dense_dir or os.path.join(run.store.output_dir, 'dense')
    dense = summary['dense_model']
    cache = os.path.join(WORK_DIR.value, model_name,
                         _run_name('tfmot', rate) + '.json')
    if os.path.exists(cache):
      with open(cache) as f:
        tfmot_result = json.load(f)
    else:
      pruned, seconds = _tfmot_prune(model_name, dense.get_weights(), data,
                                     keep_ratios)
      tfmot_result = {'accuracy': trainer.accuracy(pruned, data.x_test,
                                                       data.y_test),
                      'rate': run_steps.compression_rate(pruned),
                      'epochs': ADMM_EPOCHS.value + RETRAIN_EPOCHS.value,
                      'seconds': seconds,
                      'pattern_holds': _pattern_holds(pruned)}
      run_files.write_json(cache, tfmot_result)
    comparison.append({'rate': rate, 'admm': admm_result,
                       'tfmot': tfmot_result})
    _log(f'{model_name} {rate:g}x: tf-admm {admm_result["accuracy"]:.4f}, '
         f'tfmot {tfmot_result["accuracy"]:.4f}')
  # The overhead is timed on the rate comparison's ramp only.
  timing = None if pattern else _epoch_seconds(
      model_name, dense.get_weights(), data,
      tf_admm.targets.rescale(profile, sizes, 50))
  final = summary['final_model']  # the highest rate's
  deployment = _deployment(dense, final, data)
  return {
      'model': model_name, 'dataset': dataset.name, 'pattern': PATTERN.value,
      'dense_accuracy': summary['dense_metrics']['test_accuracy'],
      'pretrain_epochs': PRETRAIN_EPOCHS.value,
      'ramp_epochs': ADMM_EPOCHS.value, 'retrain_epochs': RETRAIN_EPOCHS.value,
      'comparison': comparison, 'epoch_seconds': timing,
      'deployment': {'model_rate': run_steps.compression_rate(final),
                     'formats': deployment},
  }


def _machine():
  return {'platform': platform.platform(), 'processor': platform.processor()
          or platform.machine(), 'cpus': os.cpu_count(),
          'python': platform.python_version(), 'tensorflow': tf.__version__}


def _plot(results, path):
  fig, ax = plt.subplots(figsize=(6, 4))
  for result in results:
    rows = result['comparison']
    for method, style in (('admm', 'o-'), ('tfmot', 's--')):
      ax.plot([r[method]['rate'] for r in rows],
              [100 * r[method]['accuracy'] for r in rows], style,
              label=f'{result["model"]}: '
              f'{"tf-admm" if method == "admm" else "tfmot"}')
  ax.set_xscale('log')
  ax.set_xlabel('compression rate')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('Accuracy at equal epoch budgets (MNIST)')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _markdown(results, notes):
  """RESULTS.md from the results, verdicts computed, not typed."""
  lines = ['# tf-admm against tfmot magnitude pruning', '']
  for result in results:
    machine = result['machine']
    lines += [
        f'## {result["model"]} on {result["dataset"]}'
        + (f' at the {result["pattern"]} pattern' if result.get('pattern')
           else ''), '',
        f'Measured {result["measured"]} on {machine["cpus"]} CPUs '
        f'({machine["processor"]}, {machine["platform"]}), TensorFlow '
        f'{machine["tensorflow"]}. Command: `{result["command"]}`.', '',
        f'Dense test accuracy {100 * result["dense_accuracy"]:.2f}% after '
        f'{result["pretrain_epochs"]} epochs (shared start). Each method, '
        f'each rate: {result["ramp_epochs"]} epochs ramping the sparsity up '
        f'(same cubic curve, a hard prune every 50 steps), then '
        f'{result["retrain_epochs"]} epochs at the final mask; same per-layer '
        'targets, optimizer and learning-rate schedule.', '',
        '| rate | epochs | tf-admm accuracy | tfmot accuracy | difference |',
        '|---:|---:|---:|---:|---:|']
    for row in result['comparison']:
      admm, tfmot_row = row['admm'], row['tfmot']
      lines.append(
          f'| {admm["rate"]:.1f}x | {admm["epochs"]} | '
          f'{100 * admm["accuracy"]:.2f}% | {100 * tfmot_row["accuracy"]:.2f}% '
          f'| {100 * (admm["accuracy"] - tfmot_row["accuracy"]):+.2f} |')
    if result.get('pattern'):
      row, = result['comparison']
      holds = {m: 'yes' if row[m]['pattern_holds'] else 'NO'
               for m in ('admm', 'tfmot')}
      lines += ['', f'Pattern {result["pattern"]} wherever it fits (both '
                'methods; elsewhere magnitude pruning to the same share). '
                'Every such weight of the final model on the pattern: '
                f'tf-admm {holds["admm"]}, tfmot {holds["tfmot"]}. The '
                'pattern applies in full from the first prune in both; the '
                'training overhead is timed in the rate comparison only.', '']
    else:
      best = {m: max([r[m]['rate'] for r in result['comparison']
                      if r[m]['accuracy'] >= 0.99] or [0.0])
              for m in ('admm', 'tfmot')}
      reached = {m: f'{rate:.1f}x' if rate else 'none' for m, rate in
                 best.items()}
      differences = [(r['rate'],
                      r['admm']['accuracy'] - r['tfmot']['accuracy'])
                     for r in result['comparison']]
      high = [d for rate, d in differences if rate >= 100]
      low = [d for rate, d in differences if rate < 100]
      lines += ['', f'Highest measured rate at >= 99.0%: tf-admm '
                f'{reached["admm"]}, tfmot {reached["tfmot"]}. At 100x and '
                f'above tf-admm is ahead at {sum(d > 0 for d in high)} of '
                f'{len(high)} rates; below 100x its largest shortfall is '
                f'{max([0.0] + [-100 * d for d in low]):.2f} points.', '']
    timing = result['epoch_seconds']
    lines += [] if timing is None else [
        f'Training cost per epoch ({timing["examples_per_epoch"]} examples, '
        f'{len(timing["seconds"]["wall"]["plain"])} interleaved epochs per '
        'arm; the ADMM arm runs the ramp with its prunes every 50 steps). '
        'CPU seconds are the process\'s, all threads; wall seconds on this '
        'machine are bimodal (see the notes).', '',
        '| measure | plain | ADMM | tfmot | ADMM / plain | tfmot / plain |',
        '|---|---:|---:|---:|---:|---:|']
    for key, label in () if timing is None else (
        ('median_cpu', 'median CPU s'), ('median_wall', 'median wall s'),
        ('fastest_wall', 'fastest wall s')):
      row = timing[key]
      lines.append(f'| {label} | {row["plain"]:.2f} | {row["admm"]:.2f} | '
                   f'{row["tfmot"]:.2f} | {row["admm_vs_plain"]:.3f} | '
                   f'{row["tfmot_vs_plain"]:.3f} |')
    lines += [
        '',
        f'Deployment of the tf-admm model at '
        f'{result["deployment"]["model_rate"]:.1f}x (LiteRT, 1 thread, '
        'median single-example latency):', '',
        '| format | bytes | gzip bytes | accuracy | latency (ms) | runtime |',
        '|---|---:|---:|---:|---:|---|']
    for name, d in result['deployment']['formats'].items():
      lines.append(f'| {name} | {d["bytes"]:,} | {d["gzip_bytes"]:,} | '
                   f'{100 * d["accuracy"]:.2f}% | {d["latency_ms"]:.3f} | '
                   f'{d["runtime"]} |')
    lines.append('')
  lines += ['![accuracy against rate](accuracy_vs_rate.png)', '']
  if os.path.exists(notes):
    with open(notes) as f:
      lines += [f.read()]
  return '\n'.join(lines)


def _results_dir():
  return RESULTS_DIR.value or os.path.join(
      os.path.dirname(__file__), 'results', 'tfmot_magnitude', 'default',
      f'seed{SEED.value}')


def write_results(results_dir):
  results = []
  for name in sorted(os.listdir(results_dir)):
    if name.endswith('.json'):
      with open(os.path.join(results_dir, name)) as f:
        results.append(json.load(f))
  _plot(results, os.path.join(results_dir, 'accuracy_vs_rate.png'))
  path = os.path.join(results_dir, 'RESULTS.md')
  with open(path, 'w') as f:
    # What was tried and concluded, written by hand, goes beside RESULTS.md.
    f.write(_markdown(results, os.path.join(results_dir, 'NOTES.md')))
  return path


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if PATTERN.value:
    if FLAGS['rates'].present:
      raise app.UsageError('--pattern compares at the pattern\'s own rate; '
                           'leave out --rates.')
    try:
      _pattern()
    except ValueError as error:
      raise app.UsageError(str(error)) from None
  rates = sorted(float(r) for r in RATES.value)
  dataset = dataset_flags.load()
  results_dir = _results_dir()
  os.makedirs(results_dir, exist_ok=True)
  start = time.time()
  for model_name in MODELS.value:
    result = _compare(model_name, dataset, rates)
    result.update(machine=_machine(), command=shlex.join(sys.argv),
                  measured=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    path = os.path.join(results_dir, f'{model_name}.json')
    with open(path, 'w') as f:
      json.dump(result, f, indent=2)
    _log(f'wrote {path}')
  _log(f'wrote {write_results(results_dir)}; all done in '
       f'{time.time() - start:.0f} s')


if __name__ == '__main__':
  app.run(main)
