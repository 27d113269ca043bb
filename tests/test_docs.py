"""The documentation site builds with warnings as errors, and every python
block of the guides (docs/guides/*.md) runs as pasted, on 3,000 MNIST
examples where it trains on MNIST, with what it prints checked."""

import ast
import glob
import os
import subprocess
import sys

import pytest

from tests import markdown_examples

ROOT = markdown_examples.ROOT
GUIDES = sorted(glob.glob(os.path.join(ROOT, 'docs', 'guides', '*.md')))


def _blocks():
  """A test parameter per python block of the guides: (guide file name,
  index among its python blocks, code); those that load MNIST train, and
  are marked slow."""
  params = []
  for path in GUIDES:
    guide = os.path.basename(path)
    for index, code in enumerate(markdown_examples.python_blocks(path)):
      marks = [pytest.mark.slow] if markdown_examples.loads_mnist(code) else []
      params.append(pytest.param(guide, index, code, marks=marks,
                                 id=f'{guide}:{index}'))
  return params


def _check_pruning(printed, tmp_path):
  del tmp_path
  paths, counts, under_pattern = printed[-3:]
  assert ast.literal_eval(paths) == ['conv1/kernel', 'conv2/kernel',
                                     'fc1/kernel', 'fc2/kernel']
  counts = ast.literal_eval(counts)
  assert counts['conv1/kernel'] == 250  # Sparsity(0.5) of 500
  # The other 430,000 weights at 20x, shared by one LAMP threshold.
  assert sum(counts.values()) - 250 == pytest.approx(430000 / 20, abs=2)
  assert ast.literal_eval(under_pattern) == ['conv2/kernel', 'fc1/kernel',
                                             'fc2/kernel']


def _check_quantization(printed, tmp_path):
  del tmp_path
  # fc1 ternary as INT2, the 3-bit layers as INT4.
  assert printed[-1].startswith(
      "{'conv1/kernel': 4, 'conv2/kernel': 4, 'fc1/kernel': 2, "
      "'fc2/kernel': 4} ")
  assert "'gzip_bytes'" in printed[-1]
  assert float(printed[-1].split()[-1]) > 0.9  # LiteRT accuracy


def _check_channels(printed, tmp_path):
  del tmp_path
  ratios, channels, widths, factor, difference = (
      ast.literal_eval(line) for line in printed[-5:])
  assert set(ratios) == {'conv1', 'conv2', 'fc1'}
  widths = dict(widths)
  # ADMM's channel targets are the widths surgery leaves.
  assert {f'{name}/kernel': after for name, (_, after) in widths.items()
          if name in ratios} == channels
  assert widths['conv1'][0] == 20 and widths['fc2'] == (10, 10)
  assert factor >= 5
  assert difference < 1e-4


def _check_tflite_export(printed, tmp_path):
  sizes = ast.literal_eval(printed[-2])
  # int8 weights: about a quarter of the float32 file.
  assert sizes['bytes'] < (tmp_path / 'lenet5.keras').stat().st_size / 3
  assert printed[-1].startswith("refused: code.keras")
  assert 'Lambda' in printed[-1]


def _check_micro(printed, tmp_path):
  flash, arena, accuracy, lut_bits = printed[-1].split(' ', 3)
  assert int(flash) == (tmp_path / 'micro' / 'micro.tflite').stat().st_size
  assert int(flash) < (tmp_path / 'micro' / 'micro_int8.tflite').stat(
      ).st_size
  assert 0 < int(arena) < 64 * 1024
  assert float(accuracy) > 0.9  # in the TFLM interpreter
  # conv (200 codes) stays int8; fc1's 36,864 take 4-bit indices.
  bits = ast.literal_eval(lut_bits)
  assert sorted(bits.values()) == [0, 0, 4] or sorted(bits.values()) == [
      0, 4, 4]
  assert [b for name, b in bits.items() if 'fc1' in name] == [4]


# What each block prints, checked: {(guide, index of the block among the
# guide's python blocks): check(printed lines, the folder it ran in)}.
CHECKS = {
    ('pruning.md', 0): _check_pruning,
    ('quantization.md', 0): _check_quantization,
    ('channels.md', 0): _check_channels,
    ('tflite_export.md', 0): _check_tflite_export,
    ('micro.md', 0): _check_micro,
}


@pytest.mark.parametrize('guide, index, code', _blocks())
def test_guide_block_runs(guide, index, code, tmp_path, monkeypatch, capsys):
  printed = markdown_examples.run_block(
      code, f'docs/guides/{guide} (python block {index})', tmp_path,
      monkeypatch, capsys)
  check = CHECKS.get((guide, index))
  if check is not None:
    check(printed, tmp_path)


def test_checks_are_of_blocks_that_exist():
  found = {(os.path.basename(path), index) for path in GUIDES
           for index, _ in enumerate(markdown_examples.python_blocks(path))}
  assert found and set(CHECKS) <= found


def test_site_builds_with_warnings_as_errors(tmp_path):
  site = tmp_path / 'site'
  result = subprocess.run(
      [sys.executable, '-m', 'mkdocs', 'build', '--strict', '--config-file',
       os.path.join(ROOT, 'mkdocs.yml'), '--site-dir', str(site)],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  # The API reference is the docstrings'.
  page = (site / 'api' / 'tf_admm' / 'index.html').read_text()
  assert 'tf_admm.attach_admm' in page and 'Returns a copy of' in page
  page = (site / 'api' / 'tflite_export' / 'index.html').read_text()
  assert 'tflite_export.packed.pack' in page
