"""The benchmark script end to end, at a tiny budget: it must run, write its
JSON and RESULTS.md, and measure what it says it measures."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), '..', 'benchmarks',
                      'compare_tfmot.py')


def _compare(tmp_path, *flags):
  """Runs the benchmark with `flags` and a tmp_path work and results dir."""
  completed = subprocess.run(
      [sys.executable, SCRIPT, *flags, '--latency_runs=5',
       f'--work_dir={tmp_path / "work"}',
       f'--results_dir={tmp_path / "results"}'],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.mark.slow
def test_tiny_comparison_writes_results(tmp_path):
  results_dir = tmp_path / 'results'
  _compare(tmp_path, '--models=lenet300_100', '--rates=25',
           '--train_examples=6000', '--pretrain_epochs=2', '--admm_epochs=2',
           '--retrain_epochs=1', '--timing_epochs=2')
  with open(results_dir / 'lenet300_100.json') as f:
    result = json.load(f)
  row, = result['comparison']
  for method in ('admm', 'tfmot'):
    # Both reach the asked rate and stay far above chance (10%).
    assert abs(row[method]['rate'] / 25 - 1) < 0.02
    assert row[method]['accuracy'] > 0.6
    assert row[method]['epochs'] == 3
  timing = result['epoch_seconds']
  for clock in ('wall', 'cpu'):
    for arm, seconds in timing['seconds'][clock].items():
      assert len(seconds) == 2 and min(seconds) > 0, arm
    median = timing[f'median_{clock}']
    assert median['admm_vs_plain'] == median['admm'] / median['plain']
  formats = result['deployment']['formats']
  assert (formats['pruned_float32_sparse']['bytes'] <
          formats['dense_float32']['bytes'] / 5)
  # RESULTS.md goes beside the JSON, in the result's folder.
  markdown = (results_dir / 'RESULTS.md').read_text()
  assert '| 25.0x | 3 |' in markdown
  assert '| median CPU s |' in markdown
  assert '![accuracy against rate](accuracy_vs_rate.png)' in markdown
  assert (results_dir / 'accuracy_vs_rate.png').stat().st_size > 0


@pytest.mark.slow
def test_tiny_pattern_comparison_checks_the_pattern(tmp_path):
  results_dir = tmp_path / 'results'
  _compare(tmp_path, '--models=lenet5', '--pattern=2:4',
           '--train_examples=6400', '--pretrain_epochs=1', '--admm_epochs=1',
           '--retrain_epochs=1', '--timing_epochs=1')
  with open(results_dir / 'lenet5.json') as f:
    result = json.load(f)
  assert result['pattern'] == '2:4'
  row, = result['comparison']
  for method in ('admm', 'tfmot'):
    assert abs(row[method]['rate'] / 2 - 1) < 0.01
    assert row[method]['pattern_holds'] is True
  assert 'at the 2:4 pattern' in (results_dir / 'RESULTS.md').read_text()
