"""The README's API examples run as pasted (on a slice of MNIST)."""

import csv
import os
import re

import keras
import numpy as np
import pytest

import tf_admm
from tf_admm import datasets

README = os.path.join(os.path.dirname(__file__), '..', 'README.md')


def _run_example(index, tmp_path, monkeypatch, capsys):
  """Runs the README's `index`th python block on 3,000 MNIST examples in
  tmp_path; returns its last printed line."""
  with open(README) as f:
    code = re.findall(r'```python\n(.*?)```', f.read(), re.S)[index]
  subset = 'x, y = mnist.x_train[:3000], mnist.y_train[:3000]'
  assert 'x, y = mnist.x_train, mnist.y_train' in code
  code = code.replace('x, y = mnist.x_train, mnist.y_train', subset)
  root = os.environ.get(datasets.DATASETS_ENV)
  if root:  # the example runs in tmp_path; keep the archives reachable
    monkeypatch.setenv(datasets.DATASETS_ENV, os.path.abspath(root))
  monkeypatch.chdir(tmp_path)
  exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.strip().splitlines()[-1]
  assert "'gzip_bytes'" in printed
  return printed


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
  _run_example(0, tmp_path, monkeypatch, capsys)
  with open(tmp_path / 'admm.csv') as f:
    assert 'admm_primal_residual' in next(csv.reader(f))


@pytest.mark.slow
def test_readme_keras3_example_runs(tmp_path, monkeypatch, capsys):
  _run_example(1, tmp_path, monkeypatch, capsys)
  # The ADMM model it saved loads with its state, its masks within 20x.
  loaded = keras.saving.load_model(tmp_path / 'admm.keras')
  pairs = tf_admm.admm_weights(loaded)
  assert pairs and all(r.started for _, r in pairs)
  sizes = sum(w.size for w, _ in pairs)
  kept = sum(np.count_nonzero(r.mask.numpy()) for _, r in pairs)
  assert sizes / kept == pytest.approx(20, rel=0.02)


@pytest.mark.slow
def test_readme_quantization_example_runs(tmp_path, monkeypatch, capsys):
  printed = _run_example(2, tmp_path, monkeypatch, capsys)
  # fc1 ternary as INT2, the 3-bit layers as INT4.
  assert printed.startswith(
      "{'lenet5/conv1/Conv2D': 4, 'lenet5/conv2/Conv2D': 4, "
      "'lenet5/fc1/MatMul': 2, 'lenet5/fc2/MatMul': 4} ")
  assert float(printed.split()[-1]) > 0.9  # LiteRT accuracy
