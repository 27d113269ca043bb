"""The main job end to end: a tiny progressive run, interrupted and resumed,
and its command line's answers to bad flags."""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from ai_edge_litert import schema_py_generated as schema
from litert_quantizer.utils import tfl_flatbuffer_utils
import numpy as np
import pytest

from tf_admm import biases
from tf_admm import datasets
from tf_admm import keras_compat
from tf_admm.keras_compat import keras

SCRIPT = os.path.join(os.path.dirname(__file__), '..', 'examples',
                      'prune_mnist.py')
TINY = ['--train_examples=2500', '--validation_examples=500',
        '--test_examples=1000',
        '--pretrain_epochs=1', '--admm_epochs=1', '--retrain_epochs=2',
        '--target_rate=8', '--first_rate=2', '--stage_factor=2',
        '--candidates=2']
REPORT_KEYS = {'dataset', 'model', 'dense_accuracy', 'accuracy',
               'compression_rate', 'compression_rate_counts',
               'model_compression_rate', 'total_weights', 'nonzero_weights',
               'layers', 'unpruned', 'constraints', 'constraints_hold',
               'epochs', 'wall_seconds',
               'tflite'}


def _command(*flags):
  return [sys.executable, SCRIPT, *flags]


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')


def _run(*flags, timeout=600):
  return subprocess.run(_command(*flags), capture_output=True, text=True,
                        timeout=timeout, env=_env())


def _float_vectors(content):
  """The constant float32 vectors (the biases) of a .tflite file."""
  model = tfl_flatbuffer_utils.read_model(content)
  return [np.frombuffer(bytes(model.buffers[t.buffer].data), np.float32)
          for t in model.subgraphs[0].tensors
          if t.type == schema.TensorType.FLOAT32 and len(t.shape) == 1 and
          model.buffers[t.buffer].data is not None]


def _snapshot(folder):
  """{path: (mtime, bytes)} of every file under folder."""
  found = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns,
                                                f.read())
  return found


def _finished_units(folder):
  """{unit folder: its metrics.json (mtime, bytes)}: the units done so far."""
  found = {}
  for unit in [os.path.join(folder, 'dense')] + glob.glob(
      os.path.join(folder, 'candidates', '*')):
    metrics = os.path.join(unit, 'metrics.json')
    if os.path.exists(metrics):
      with open(metrics, 'rb') as f:
        found[os.path.relpath(unit, folder)] = (
            os.stat(metrics).st_mtime_ns, f.read())
  return found


@pytest.mark.slow
def test_killed_three_times_at_random_the_run_finishes_each_unit_once(
    tmp_path):
  out = str(tmp_path / 'run')
  flags = TINY + [f'--output_dir={out}']
  seed = random.randrange(2**32)
  delays = [random.Random(seed + kill).uniform(8, 36) for kill in range(3)]
  outputs, finished = [], {}
  for kill, delay in enumerate(delays):
    log = tmp_path / f'killed_after_{delay:.1f}s.log'
    with open(log, 'w') as f:
      start = time.time()
      process = subprocess.Popen(_command(*flags), stdout=f,
                                 stderr=subprocess.STDOUT, env=_env())
      if kill == 0:  # a second run into the same folder meanwhile
        _refused_while_running(process, flags)
      try:
        process.wait(timeout=max(1, delay - (time.time() - start)))
      except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)  # as hard as interruptions get
        process.wait()
    outputs.append(log.read_text())
    now = _finished_units(out)
    for unit, value in finished.items():
      assert now[unit] == value, (f'{unit} was redone (seed {seed}, kills '
                                  f'after {delays} s)')
    finished = now

  result = _run(*flags)
  assert result.returncode == 0, result.stderr[-3000:]
  outputs.append(result.stdout)
  for unit, value in finished.items():
    assert _finished_units(out)[unit] == value, f'{unit} was redone'
  assert sorted(_finished_units(out)) == [
      'candidates/s00_c0', 'candidates/s01_c0', 'candidates/s02_c0',
      'candidates/s02_c1', 'dense'], (seed, delays)
  printed = ''.join(outputs)
  for line in ('pretrained:', 'stage 1/3', 'stage 2/3', 'stage 3/3'):
    assert printed.count(line) <= 1, (line, seed, delays)

  with open(os.path.join(out, 'report.json')) as f:
    report = json.load(f)
  assert REPORT_KEYS <= set(report)
  assert report['compression_rate'] == pytest.approx(8, rel=0.02)
  # dense, then s00_c0, s01_c0 and both pool members pushed at stage 3.
  assert report['epochs'] == 1 + 4 * (1 + 2)
  assert len(report['candidates']) == 4
  assert [l['name'] for l in report['layers']] == [
      'conv1/kernel', 'conv2/kernel', 'fc1/kernel', 'fc2/kernel']
  assert [u['path'] for u in report['unpruned']] == [
      'conv1/bias', 'conv2/bias', 'fc1/bias', 'fc2/bias']
  assert {c['class_name'] for c in report['constraints'].values()} == {
      'KeepLargest'}
  assert report['constraints_hold'] is True
  # Biases count in the whole model's rate only.
  assert 1 < report['model_compression_rate'] < report['compression_rate']
  assert sum(l['nonzero'] for l in report['layers']) == (
      report['nonzero_weights'])
  assert set(report['tflite']) == {'variant', 'bytes', 'gzip_bytes',
                                   'accuracy', 'dense_bytes',
                                   'dense_gzip_bytes'}
  for name in ('report.md', 'accuracy_vs_compression.png', 'kept_weights.png',
               'final.keras', 'tflite/int8_sparse.tflite'):
    assert os.path.getsize(os.path.join(out, name)) > 0
  assert f'Report: {os.path.join(out, "report.json")}' in result.stdout


def _refused_while_running(process, flags):
  """Starts the same run while `process` holds its folder: it must be
  refused at once, naming the process, and leave the run alone."""
  lock = os.path.join(flags[-1].split('=', 1)[1], 'run.lock')
  deadline = time.time() + 120
  while not (os.path.exists(lock) and
             f'"pid": {process.pid}' in open(lock).read()):
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.2)
  second = _run(*flags, timeout=120)
  assert second.returncode != 0
  assert 'Traceback' not in second.stderr
  assert f'is in use by process {process.pid}' in (
      second.stderr.strip().splitlines()[-1])
  assert process.poll() is None  # the first run goes on


def groups_over_n(kernel, axis, n, m):
  """How many groups of m consecutive entries along `axis` hold more than n
  nonzeros."""
  groups = np.moveaxis(kernel, axis, -1).reshape(-1, m)
  return int(np.sum(np.count_nonzero(groups, axis=-1) > n))


@pytest.mark.slow
def test_pattern_alone_prunes_2_of_4_and_lists_the_fallback(tmp_path):
  out = str(tmp_path / 'nm')
  result = _run('--pattern=2:4', '--train_examples=2500',
                '--validation_examples=500', '--test_examples=1000',
                '--pretrain_epochs=1',
                '--admm_epochs=1', '--retrain_epochs=1', '--candidates=1',
                '--prune_every_steps=5', f'--output_dir={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert ('constraints: KeepLargest: conv1/kernel; NOutOfM: conv2/kernel, '
          'fc1/kernel, fc2/kernel (every one holds: yes)') in result.stdout
  with open(os.path.join(out, 'report.json')) as f:
    report = json.load(f)
  assert report['compression_rate'] == pytest.approx(2.0, rel=0.01)
  final = keras.models.load_model(os.path.join(out, 'final.keras'))
  # Input dimensions: axis -2 of a Conv2D kernel, axis 0 of a Dense one.
  kept = 0
  for name, axis in (('conv2', -2), ('fc1', 0), ('fc2', 0)):
    kernel = final.get_layer(name).kernel.numpy()
    assert groups_over_n(kernel, axis, 2, 4) == 0, name
    assert np.count_nonzero(kernel) <= kernel.size // 2, name
    kept += np.count_nonzero(kernel)
  # Half of each, less what dead and unread units gave up before export.
  zeroed = sum(r['weights_zeroed'] for r in report['dead_units'].values())
  assert kept + zeroed == (25000 + 400000 + 5000) // 2
  conv1 = final.get_layer('conv1').kernel.numpy()  # one input channel
  assert np.count_nonzero(conv1) == conv1.size // 2


def _corrupt_mnist(tmp_path):
  manual = tmp_path / 'corrupt_mnist'
  shutil.copytree(datasets.default_manual_dir('mnist'), manual)
  path = manual / 'train-images-idx3-ubyte.gz'
  path.write_bytes(path.read_bytes()[:5000])
  return manual


def _partial_mnist(tmp_path):
  manual = tmp_path / 'partial_mnist'
  manual.mkdir()
  shutil.copy(os.path.join(datasets.default_manual_dir('mnist'),
                           'train-images-idx3-ubyte.gz'), manual)
  return manual


# What a user most often gets wrong, run as the user runs it.
@pytest.mark.parametrize('make_flags, message', [
    (lambda tmp: ['--target_rate=0.5'], '--target_rate must be > 1'),
    (lambda tmp: ['--model=alexnet'], "Unknown --model 'alexnet'"),
    (lambda tmp: ['--dataset=no_such_dataset'], 'Unknown TFDS dataset'),
    (lambda tmp: [f'--manual_dir={tmp}/missing'], 'does not exist'),
    (lambda tmp: [f'--manual_dir={_partial_mnist(tmp)}',
                  f'--tfds_data_dir={tmp}/tfds'],
     'missing t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, '
     'train-labels-idx1-ubyte.gz'),
    (lambda tmp: [f'--manual_dir={_corrupt_mnist(tmp)}',
                  f'--tfds_data_dir={tmp}/tfds'],
     'not the original archive (truncated, damaged or another dataset\'s): '
     'train-images-idx3-ubyte.gz'),
    (lambda tmp: [f'--output_dir={tmp}/a_file/run'], 'output folder'),
    (lambda tmp: ['--candidates=0'], 'candidates must be >= 1, got 0'),
    (lambda tmp: ['--rho=-1'], 'rho must be > 0, got -1.0'),
])
def test_bad_flags_fail_fast_with_one_clear_line(tmp_path, make_flags,
                                                 message):
  (tmp_path / 'a_file').write_text('not a folder')
  start = time.time()
  result = _run(f'--output_dir={tmp_path}/run', *make_flags(tmp_path),
                timeout=120)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      'prune_mnist: error: ')
  assert message in result.stderr.strip().splitlines()[-1]
  assert time.time() - start < 60


# Calls the main job's main() once per flag list, in one process, and prints
# what each exited with.
_REFUSALS = """
import json, sys
from absl import flags
from tf_admm.main_job import prune_mnist as main_job
exits = []
for flag_list in json.loads(sys.argv[1]):
  flags.FLAGS(['prune_mnist'] + flag_list)
  try:
    main_job.main(['prune_mnist'])
    exits.append(None)
  except SystemExit as refusal:
    exits.append(str(refusal.code))
  flags.FLAGS.unparse_flags()
print(json.dumps(exits))
"""

# The rest of the refusals, through the same main(), in one process.
OTHER_REFUSALS = [
    (['--pattern=2/4'], 'A pattern is N:M'),
    (['--pattern=4:2'], 'need integers 0 < n < m'),
    (['--pattern=2:4', '--allocation=global'],
     '--allocation needs --target_rate too'),
    (['--dataset=cifar10'], 'images of shape (32, 32, 3)'),
    (['--bits=3'], '--bits needs --levels'),
    (['--levels=uniform'], '--levels=uniform needs --bits'),
    (['--levels=kmeans', '--bits=conv1:3,fc9:2'], "--bits names 'fc9'"),
    (['--levels=uniform', '--bits=conv1:3,conv2:3'],
     '--bits gives no bits for fc1, fc2'),
    (['--levels=uniform', '--bits=conv1=3'],
     "--bits: 'conv1=3' is not a whole number of bits"),
    (['--levels=uniform', '--bits=3,4'], "--bits: '3' is not layer:bits"),
    (['--levels=uniform', '--bits=conv1:3,conv1:2'],
     "--bits gives 'conv1' bits twice"),
    (['--levels=uniform', '--bits=9'],
     "--bits for conv1: Quantize('uniform') needs bits, an integer from 1 to "
     '8; got 9'),
    (['--levels=uniform', '--bits=3', '--hold_fraction=0'],
     'hold_fraction must be in (0, 1], got 0.0'),
    # The preset's bits give way to fixed levels: the next check refuses.
    (['--preset=demo', '--levels=ternary', '--bias_bits=1'],
     '--bias_bits: Bias bits must be'),
    (['--target_rate=1'], '1 only with --levels'),
    (['--target_macs=5'], '--target_macs needs --structure'),
    (['--structure=channels', '--pattern=2:4'],
     '--structure=channels prunes whole channels; it does not take '
     '--pattern'),
    (['--profile=conv1:1,conv2:1'], '--profile gives no ratio for fc1, fc2'),
    (['--profile=conv1:1,conv2:1,fc1:2,fc2:1'],
     "--profile: 'fc1:2' needs a ratio in (0, 1]"),
    (['--profile=fc9:1'], "--profile names 'fc9', which is not a pruned "
     'layer of the model; they are conv1, conv2, fc1, fc2'),
    (['--profile=conv1=1'], "--profile: 'conv1=1' is not layer:ratio"),
    (['--profile=conv1:1', '--allocation=global'],
     '--profile shapes --allocation=profile only'),
    (['--strategy=multi_worker'], 'reads the cluster from TF_CONFIG'),
    (['--keras=3', '--strategy=multi_worker'],
     '--strategy=multi_worker trains Keras 2 models only'),
    (['--test_examples=0'], '--test_examples must be >= 1'),
    (['--seed=-1'], 'seed must be in [0, 2**32), got -1'),
    (['--quantize_updates_per_epoch=10'],
     '--quantize_updates_per_epoch needs --levels'),
    (['--levels=ternary', '--quantize_updates_per_epoch=0'],
     'quantize_updates_per_epoch must be >= 1, got 0'),
    (['--bias_bits=1'], '--bias_bits: Bias bits must be an integer from 2 to '
     '16, not 1'),
    # Requests no run can meet, refused before any training.
    (['--target_rate=inf'], '--target_rate must be a finite number, got inf'),
    (['--rho=nan'], '--rho must be a finite number, got nan'),
    (['--levels=ternary', '--quantize_epochs_per_round=inf'],
     '--quantize_epochs_per_round must be a finite number, got inf'),
    (['--target_rate=1e12'], 'A compression rate of 1e+12x is out of reach'),
    (['--target_rate=1e12', '--stage_rates=4,1e12'],
     'A compression rate of 1e+12x is out of reach'),
    (['--shift_pixels=100'], "shift_pixels (100) must be less than the "
     "images' height and width (28x28)"),
] + [
    # Every preset's settings pass their checks, up to the bad seed.
    ([f'--preset={preset}', '--seed=-1'], 'seed must be in [0, 2**32)')
    for preset in ('demo', 'paper', 'paper_quantized', 'binary', 'fast',
                   'micro')
]


def test_other_bad_flags_are_refused(tmp_path):
  flag_lists = [[f'--output_dir={tmp_path}/run{i}', *flags]
                for i, (flags, _) in enumerate(OTHER_REFUSALS)]
  env = _env()
  env.pop('TF_CONFIG', None)
  result = subprocess.run(
      [sys.executable, '-c', _REFUSALS, json.dumps(flag_lists)],
      capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  exits = json.loads(result.stdout.strip().splitlines()[-1])
  for i, ((flags, message), code) in enumerate(zip(OTHER_REFUSALS, exits)):
    assert code and code.startswith('prune_mnist: error: '), (flags, code)
    assert message in code, (flags, code)
    assert not (tmp_path / f'run{i}').exists()  # nothing left behind


def test_other_settings_never_touch_an_existing_run(tmp_path):
  out = tmp_path / 'run'
  out.mkdir()
  (out / 'run.json').write_text(json.dumps({'model': 'lenet5', 'old': 1}))
  (out / 'report.json').write_text('{"kept": true}')
  before = _snapshot(out)
  result = _run(*TINY, f'--output_dir={out}')
  assert result.returncode != 0
  assert 'holds a run with other settings' in result.stderr.splitlines()[-1]
  assert _snapshot(out) == before


@pytest.mark.slow
@pytest.mark.parametrize('keras_version', [2, 3])
def test_pruned_and_quantized_run_ships_packed_int2_and_int4(tmp_path,
                                                             keras_version):
  out = str(tmp_path / 'quantized')
  flags = [f'--keras={keras_version}', '--train_examples=2500',
           '--validation_examples=500', '--test_examples=2000',
           '--pretrain_epochs=1', '--admm_epochs=1', '--retrain_epochs=1',
           '--target_rate=8', '--stage_rates=8', '--candidates=1',
           '--prune_every_steps=5', '--levels=uniform',
           '--bits=conv1:3,conv2:3,fc1:1,fc2:3', '--noper_channel',
           '--quantize_epochs_per_round=0.5', '--bias_bits=8',
           f'--output_dir={out}']
  if keras_version == 3:  # trained scales on one of the two runs
    flags.append('--train_scales')
  result = _run(*flags)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(out, 'report.json')) as f:
    report = json.load(f)
  assert report['compression_rate'] == pytest.approx(8.0, rel=0.01)
  assert report['constraints_hold'] and report['quantized']['all_held']
  stored = report['storage']
  assert {'weight_data_bytes', 'weight_data_reduction', 'with_index_bytes',
          'with_index_reduction', 'tflite'} <= set(stored)
  assert set(stored['tflite']) == {'bytes', 'gzip_bytes', 'accuracy'}
  nonzeros = {l['name']: l['nonzero'] for l in report['layers']}
  bits = {'conv1/kernel': 3, 'conv2/kernel': 3, 'fc1/kernel': 1,
          'fc2/kernel': 3}
  assert stored['weight_data_bytes'] == sum(
      nonzeros[p] * b for p, b in bits.items()) / 8
  assert stored['weight_data_reduction'] == pytest.approx(
      report['total_weights'] * 4 / stored['weight_data_bytes'])
  # The packed file: fc1 binary in INT2, the rest INT4, as accurate as Keras.
  packed_bits = report['tflite_variants']['packed_weight_only']['packed_bits']
  assert sorted(packed_bits.values()) == [2, 4, 4, 4]
  assert stored['tflite']['gzip_bytes'] == report['tflite_variants'][
      'packed_weight_only']['gzip_bytes']
  # Within 0.1 points: 2 of the 2,000 test examples (and float rounding).
  assert abs(stored['tflite']['accuracy'] - report['accuracy']) <= 0.001 + 1e-9
  assert report.get('keras') == keras_version
  # The file's biases are 8-bit fixed-point values, each layer on its grid.
  assert report['bias_rounding']['bits'] == 8
  with open(os.path.join(out, 'tflite', 'packed_weight_only.tflite'),
            'rb') as f:
    file_biases = _float_vectors(f.read())
  assert len(file_biases) == 4
  for values in file_biases:
    np.testing.assert_array_equal(values, biases.to_fixed_point(values, 8))
  # fc1, the longest, feeds fc2: its units go in order of bias.
  fc1_bias = max(file_biases, key=len)
  assert np.all(np.diff(fc1_bias) >= 0)
  final = keras_compat.keras_module(keras_version).models.load_model(
      os.path.join(out, 'final.keras'))
  assert keras_compat.is_keras3_model(final) == (keras_version == 3)
  for name, b in (('conv1', 3), ('fc1', 1), ('fc2', 3)):
    kernel = final.get_layer(name).kernel.numpy()
    assert len(np.unique(kernel[kernel != 0])) <= 2**b, name
  if keras_version == 2:
    # The first run already loaded its finished units from disk; whether a
    # rerun retrains is the driver's logic, the same for either Keras.
    return
  # Rerunning finds every unit finished and only exports again.
  again = _run(*flags)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'quantized:' not in again.stdout and 'Epoch' not in again.stdout


@pytest.mark.slow
def test_channel_run_ships_a_smaller_faster_dense_model(tmp_path):
  out = str(tmp_path / 'channels')
  flags = ['--structure=channels', '--target_macs=4', '--stage_rates=4',
           '--train_examples=1500', '--validation_examples=500',
           '--test_examples=1000',
           '--pretrain_epochs=1', '--admm_epochs=1', '--retrain_epochs=1',
           '--finetune_epochs=1', '--candidates=1', '--prune_every_steps=5',
           f'--output_dir={out}']
  result = _run(*flags)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(out, 'report.json')) as f:
    report = json.load(f)
  assert report['macs']['dense'] == 2293000  # tests/test_macs.py's count
  assert report['macs']['final'] <= report['macs']['dense'] / 4
  assert set(report['latency_ms']) == {'dense', 'final'}
  assert report['latency_ms']['final'] < report['latency_ms']['dense']
  cut = report['shrunk']
  assert cut['surgery_max_difference'] < 1e-3
  final = keras.models.load_model(os.path.join(out, 'final.keras'))
  # final.keras is the small dense model: the kept channels, no zeros.
  for name in ('conv1', 'conv2', 'fc1'):
    before, after = cut['channels'][name]
    assert after < before
    assert final.get_layer(name).kernel.shape[-1] == after
  assert final.count_params() == report['params']['final']
  assert report['tflite']['variant'] == 'int8'
  assert abs(report['tflite']['accuracy'] - report['accuracy']) <= 0.01


@pytest.mark.slow
@pytest.mark.parametrize('keras_version', [2, 3])
def test_micro_run_cuts_channels_quantizes_and_ships_for_tflm(tmp_path,
                                                              keras_version):
  out = str(tmp_path / 'micro')
  result = _run('--preset=micro', f'--keras={keras_version}',
                '--train_examples=2500', '--validation_examples=500',
                '--test_examples=1000', '--pretrain_epochs=1',
                '--admm_epochs=1', '--retrain_epochs=1', '--finetune_epochs=1',
                '--prune_every_steps=5', '--quantize_epochs_per_round=0.5',
                f'--output_dir={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(out, 'report.json')) as f:
    report = json.load(f)
  # Cut first, then quantized: the small dense model's kernels on 4-bit
  # levels (16 values a channel, no zeros left to hold).
  assert report['macs']['final'] <= report['macs']['dense'] / 6 * 1.01
  assert report['quantized']['parent'] == 'shrunk'
  assert report['constraints_hold'] and report['quantized']['all_held']
  final = keras_compat.keras_module(keras_version).models.load_model(
      os.path.join(out, 'final.keras'))
  for name, (_, width) in report['shrunk']['channels'].items():
    kernel = final.get_layer(name).kernel.numpy()
    assert kernel.shape[-1] == width
    channels = kernel.reshape(-1, width)
    assert max(len(np.unique(channels[:, c])) for c in range(width)) <= 16
  micro = report['micro']
  with open(os.path.join(out, 'tflite', 'micro.tflite'), 'rb') as f:
    assert len(f.read()) == micro['flash_bytes']
  assert micro['flash_bytes'] < micro['int8_bytes']
  assert micro['outputs_equal']
  assert micro['lut_bits'] and all(
      bits in (0, 4) for bits in micro['lut_bits'].values())
  assert all(micro['levels_exact'].values())
  # Both reference int8 kernels; their rounding may differ by one code,
  # which could flip one example of the 1,000.
  assert abs(micro['accuracy'] - micro['int8_accuracy_litert']) <= 0.001
  assert 'TFLite Micro file:' in result.stdout
