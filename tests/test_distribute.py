"""ADMM under tf.distribute, on Keras 2 and Keras 3 (TensorFlow backend):
MirroredStrategy over two logical CPUs matches one device, and two
MultiWorkerMirroredStrategy workers on 127.0.0.1 agree.

Each run is a process of its own (`tests/distributed_admm.py`): logical
devices and TF_CONFIG must be set before TensorFlow starts.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = 1024
TIMEOUT_S = 300


@pytest.fixture(scope='module')
def mnist_file(mnist, tmp_path_factory):
  x, y, _, _ = mnist
  path = str(tmp_path_factory.mktemp('data') / 'mnist.npz')
  np.savez(path, x=x[:EXAMPLES], y=y[:EXAMPLES])
  return path


def _command(strategy, data, output, *flags):
  return [sys.executable, '-m', 'tests.distributed_admm',
          f'--strategy={strategy}', f'--data={data}', f'--output={output}',
          *flags]


def _env(**extra):
  root = os.path.join(os.path.dirname(__file__), '..')
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=root, **extra)


def _run(strategy, data, output, keras_version):
  result = subprocess.run(_command(strategy, data, output,
                                   f'--keras={keras_version}'),
                          capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=_env())
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(np.load(output))


def _paths(state, part):
  return sorted(key.split(':', 1)[1] for key in state
                if key.startswith(part + ':'))


@pytest.mark.parametrize('keras_version', [2, 3])
def test_mirrored_on_two_devices_matches_one_device(mnist_file, tmp_path,
                                                    keras_version):
  one = _run('one_device', mnist_file, str(tmp_path / 'one.npz'),
             keras_version)
  mirrored = _run('mirrored', mnist_file, str(tmp_path / 'mirrored.npz'),
                  keras_version)
  assert int(one['replicas']) == 1 and int(mirrored['replicas']) == 2

  paths = _paths(one, 'mask')
  assert paths == ['conv1/kernel', 'conv2/kernel', 'fc1/kernel', 'fc2/kernel']
  for path in paths:
    assert one[f'mask:{path}'].mean() < 0.9  # the ramp did prune
    assert np.abs(one[f'u:{path}']).max() > 0  # a Z/U step since the last
    for part in ('mask', 'retrained_mask'):
      np.testing.assert_array_equal(mirrored[f'{part}:{path}'],
                                    one[f'{part}:{path}'], f'{part} of {path}')
    # Two replicas' gradients add up in another order than one batch's.
    for part in ('z', 'u', 'retrained'):
      np.testing.assert_allclose(mirrored[f'{part}:{path}'],
                                 one[f'{part}:{path}'], atol=1e-6,
                                 err_msg=f'{part} of {path}')
    # Masked retraining held its masks exactly on every replica.
    for run in (one, mirrored):
      assert not run[f'retrained:{path}'][~run[f'retrained_mask:{path}']].any()


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


# Keras 3.15's fit fails under MultiWorkerMirroredStrategy before any step
# (it cannot convert the first distributed batch of its shape tracing), so
# tf_admm refuses that pair (test_progressive checks the refusal).
@pytest.mark.parametrize('keras_version', [2])
def test_two_workers_end_with_identical_masks(mnist_file, tmp_path,
                                              keras_version):
  """...and run the progressive driver, the chief alone writing its files."""
  workers = [f'127.0.0.1:{port}' for port in _free_ports(2)]
  run_dir = tmp_path / 'run'
  processes, outputs, lines = [], [], []
  for index in range(2):
    outputs.append(str(tmp_path / f'worker{index}.npz'))
    config = {'cluster': {'worker': workers},
              'task': {'type': 'worker', 'index': index}}
    processes.append(subprocess.Popen(
        _command('multi_worker', mnist_file, outputs[-1],
                 f'--run_dir={run_dir}', f'--keras={keras_version}'),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(TF_CONFIG=json.dumps(config))))
  try:
    for process in processes:
      stdout, stderr = process.communicate(timeout=TIMEOUT_S)
      assert process.returncode == 0, stderr[-3000:]
      lines.append(json.loads(stdout.strip().splitlines()[-1]))
  finally:
    for process in processes:
      process.kill()
  chief, other = (dict(np.load(path)) for path in outputs)
  assert int(chief['replicas']) == 2
  assert chief.keys() == other.keys()
  for key in chief:
    np.testing.assert_array_equal(chief[key], other[key], err_msg=key)
  for path in _paths(chief, 'mask'):
    assert chief[f'mask:{path}'].mean() < 0.9

  assert [line['chief'] for line in lines] == [True, False]
  assert lines[0]['rate'] == lines[1]['rate'] > 3.5
  assert lines[0]['accuracy'] > 0.5  # the chief alone evaluates
  for name in ('run.json', 'allocation.json', 'pool.json',
               'dense/metrics.json', 'candidates/s00_c0/metrics.json'):
    assert (run_dir / name).is_file(), name
  assert not list(run_dir.glob('**/*.tmp'))
