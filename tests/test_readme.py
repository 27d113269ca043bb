"""The README's API example runs as pasted (on a slice of MNIST)."""

import csv
import os
import re

import pytest

from tf_admm import datasets

README = os.path.join(os.path.dirname(__file__), '..', 'README.md')


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
  with open(README) as f:
    code = re.search(r'```python\n(.*?)```', f.read(), re.S).group(1)
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
  with open(tmp_path / 'admm.csv') as f:
    assert 'admm_primal_residual' in next(csv.reader(f))
