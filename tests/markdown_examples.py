"""Runs the ```python blocks of a markdown file as pasted: the README's
and the guides' examples, for tests/test_readme.py and tests/test_docs.py.

A block that trains on MNIST's training split (`x, y = mnist.x_train,
mnist.y_train`) runs on its first 3,000 examples instead; every block runs
in a fresh folder of its own.
"""

import os
import re

from tf_admm import datasets

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), '..'))
FULL_MNIST = 'x, y = mnist.x_train, mnist.y_train'
MNIST_SUBSET = 'x, y = mnist.x_train[:3000], mnist.y_train[:3000]'


def python_blocks(path) -> list:
  """The code of each ```python block of the markdown file `path`, in
  order (```sh and other blocks left out)."""
  with open(path, encoding='utf-8') as f:
    return re.findall(r'^```python\n(.*?)^```', f.read(), re.S | re.M)


def loads_mnist(code: str) -> bool:
  return 'datasets.load(' in code


def run_block(code: str, name: str, tmp_path, monkeypatch, capsys) -> list:
  """Runs `code` (named `name` in tracebacks) in tmp_path, on 3,000 MNIST
  examples where it loads MNIST; returns the lines it printed."""
  if loads_mnist(code):  # each such block trains on its `x, y`
    assert FULL_MNIST in code, f'{name}: no {FULL_MNIST!r} to cut down'
    code = code.replace(FULL_MNIST, MNIST_SUBSET)
  root = os.environ.get(datasets.DATASETS_ENV)
  if root:  # the block runs in tmp_path; keep the archives reachable
    monkeypatch.setenv(datasets.DATASETS_ENV, os.path.abspath(root))
  monkeypatch.chdir(tmp_path)
  capsys.readouterr()  # only what the block prints
  exec(compile(code, name, 'exec'), {})  # pylint: disable=exec-used
  return capsys.readouterr().out.strip().splitlines()
