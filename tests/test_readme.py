"""The README's API examples run as pasted (on a slice of MNIST), and the
README stays short, its links pointing at files that exist."""

import csv
import os
import re

import keras
import numpy as np
import pytest

import tf_admm
from tests import markdown_examples

README = os.path.join(markdown_examples.ROOT, 'README.md')


def _run_example(index, tmp_path, monkeypatch, capsys):
  """Runs the README's `index`th python block on 3,000 MNIST examples in
  tmp_path; returns its last printed line."""
  code = markdown_examples.python_blocks(README)[index]
  assert markdown_examples.FULL_MNIST in code
  printed = markdown_examples.run_block(code, 'README.md', tmp_path,
                                        monkeypatch, capsys)[-1]
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


def test_readme_runs_every_python_block():
  # The two above; a new block needs a test here (the guides' run in
  # tests/test_docs.py).
  assert len(markdown_examples.python_blocks(README)) == 2


def test_readme_is_short():
  with open(README, encoding='utf-8') as f:
    assert len(f.read().splitlines()) <= 200


def test_readme_links_exist():
  with open(README, encoding='utf-8') as f:
    links = re.findall(r'\]\(([^)#]+)(?:#[^)]*)?\)', f.read())
  local = [link for link in links if '://' not in link]
  assert local
  missing = [link for link in local
             if not os.path.exists(os.path.join(markdown_examples.ROOT, link))]
  assert not missing, missing
