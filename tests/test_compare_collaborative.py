"""The pure helpers of benchmarks/compare_collaborative.py, on a fake report:
no training, no data."""

import importlib.util
import os

import numpy as np
import pytest

_SCRIPT = os.path.join(os.path.dirname(__file__), '..', 'benchmarks',
                       'compare_collaborative.py')
_spec = importlib.util.spec_from_file_location('compare_collaborative',
                                               _SCRIPT)
collab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collab)


def _quantize(levels, bits):
  return {'class_name': 'Quantize',
          'config': {'levels': levels, 'bits': bits, 'per_channel': False}}


def _report(quantized_epochs=5, stages=(28,), command=None):
  return {
      'command': command,
      'layers': [
          {'name': 'conv1/kernel', 'total': 500, 'nonzero': 100},
          {'name': 'conv2/kernel', 'total': 25000, 'nonzero': 1325},
          {'name': 'fc1/kernel', 'total': 400000, 'nonzero': 800},
          {'name': 'fc2/kernel', 'total': 5000, 'nonzero': 5000},
      ],
      'constraints': {
          'conv1/kernel': _quantize('uniform', 3),
          'conv2/kernel': _quantize('uniform', 3),
          'fc1/kernel': _quantize('uniform', 2),
          # fc2: no constraint, so --bits decides.
      },
      'stages': [{'epochs': e} for e in stages],
      'quantized': {'epochs': quantized_epochs},
  }


def _run(train_examples=55000, admm=16, retrain=12):
  return {'model': 'lenet5', 'train_examples': train_examples,
          'settings': {'stage_rates': [167.0], 'admm_epochs': admm,
                       'retrain_epochs': retrain}}


def test_layer_targets_are_the_kernels_by_layer_name():
  targets = collab.layer_targets(_report())
  assert list(targets) == ['conv1', 'conv2', 'fc1', 'fc2']
  assert targets['fc1'] == {'total': 400000, 'nonzero': 800,
                            'sparsity': pytest.approx(0.998)}
  assert targets['fc2']['sparsity'] == 0
  # The kept counts come back from the sparsities.
  for target in targets.values():
    assert round(target['total'] * (1 - target['sparsity'])) == (
        target['nonzero'])


def test_cluster_counts_match_tfadmm_nonzero_levels():
  report = _report()
  targets = collab.layer_targets(report)
  counts = collab.cluster_counts(report, targets, {'fc2': 3})
  # Pruned layers: 2^b nonzero levels, plus the zero centroid.
  assert counts['conv1'] == {'levels': 'uniform 3-bit', 'nonzero_levels': 8,
                             'clusters': 9, 'preserve_sparsity': True}
  assert counts['fc1']['clusters'] == 5
  # fc2 from the fallback bits; kept whole, so no zero centroid.
  assert counts['fc2'] == {'levels': 'uniform 3-bit', 'nonzero_levels': 8,
                           'clusters': 8, 'preserve_sparsity': False}
  plain = collab.cluster_counts(report, targets, {'fc2': 3},
                                zero_cluster=False)
  assert {n: c['clusters'] for n, c in plain.items()} == {
      'conv1': 8, 'conv2': 8, 'fc1': 4, 'fc2': 8}


def test_cluster_counts_other_level_kinds_and_missing_bits():
  report = _report()
  report['constraints']['fc1/kernel'] = _quantize('ternary', None)
  report['constraints']['conv2/kernel'] = _quantize('kmeans', 2)
  targets = collab.layer_targets(report)
  counts = collab.cluster_counts(report, targets, {'fc2': 3})
  assert counts['fc1']['nonzero_levels'] == 2
  assert counts['conv2']['nonzero_levels'] == 4
  with pytest.raises(ValueError, match='fc2'):
    collab.cluster_counts(report, targets, {})


def test_parse_bits():
  assert collab.parse_bits(['conv1:3', 'fc1:2']) == {'conv1': 3, 'fc1': 2}
  with pytest.raises(ValueError, match='layer:bits'):
    collab.parse_bits(['fc1'])


def test_default_phase_split_keeps_tfadmm_total():
  admm = collab.tfadmm_epochs(_run(), _report(quantized_epochs=5))
  assert admm == {'pruning': 28, 'ramp': 16, 'retrain': 12,
                  'quantization': 5}
  split = collab.phase_epochs(admm)
  assert split == {'prune_ramp': 16, 'prune_retrain': 12, 'cluster': 3,
                   'pcqat': 2}
  assert sum(split.values()) == 28 + 5


def test_phase_split_with_one_quantization_epoch_borrows_from_retraining():
  admm = collab.tfadmm_epochs(_run(admm=1, retrain=1),
                              _report(quantized_epochs=1, stages=(2,)))
  split = collab.phase_epochs(admm)
  assert split == {'prune_ramp': 1, 'prune_retrain': 0, 'cluster': 1,
                   'pcqat': 1}
  assert sum(split.values()) == 3


def test_phase_split_overrides_and_limits():
  admm = collab.tfadmm_epochs(_run(), _report())
  split = collab.phase_epochs(admm, cluster=4, pcqat=1)
  assert (split['cluster'], split['pcqat']) == (4, 1)
  with pytest.raises(ValueError, match='epoch'):
    collab.phase_epochs(admm, ramp=0)


def test_ramp_end_step_is_a_multiple_of_the_frequency():
  assert collab.ramp_end_step(16, 430, 50) == 6850
  assert collab.ramp_end_step(1, 16, 5) == 15
  with pytest.raises(ValueError, match='shorter'):
    collab.ramp_end_step(1, 16, 50)


def test_split_sizes_follow_the_run():
  command = ('examples/prune_mnist.py --train_examples=2500 '
             '--validation_examples 500 --output_dir=/tmp/x')
  assert collab.command_flag(command, 'train_examples') == 2500
  assert collab.command_flag(command, 'validation_examples') == 500
  assert collab.command_flag(command, 'seed') is None
  assert collab.split_sizes(_run(2000), _report(command=command)) == (2500,
                                                                      500)
  # A preset run on the whole split: 55,000 trained + 5,000 held out.
  preset = 'examples/prune_mnist.py --preset=paper_quantized'
  assert collab.split_sizes(_run(55000), _report(command=preset)) == (60000,
                                                                      5000)
  # Flags win.
  assert collab.split_sizes(_run(2000), _report(command=command), 3000,
                            600) == (3000, 600)


def test_verdict_lines():
  line, facts = collab.verdict({'gzip_bytes': 10000, 'accuracy': 0.9905},
                               {'gzip_bytes': 25000, 'accuracy': 0.9900})
  assert line == ('tf-admm\'s file is 2.50x smaller at equal accuracy '
                  '(within 0.1 points).')
  assert facts['bar_met'] and facts['accuracy_within_points']
  assert facts['gzip_ratio_tfmot_over_tfadmm'] == 2.5
  line, facts = collab.verdict({'gzip_bytes': 10000, 'accuracy': 0.99},
                               {'gzip_bytes': 12000, 'accuracy': 0.99})
  assert 'bar of 1.5x is not met' in line and not facts['bar_met']
  # Just under the bar reads as under it, with the bytes the bar needs.
  line, facts = collab.verdict({'gzip_bytes': 6022, 'accuracy': 0.99},
                               {'gzip_bytes': 9031, 'accuracy': 0.99})
  assert line.startswith('tf-admm\'s file is 1.49x smaller')
  assert 'needs at most 6,020 bytes' in line and not facts['bar_met']
  line, facts = collab.verdict({'gzip_bytes': 10000, 'accuracy': 0.985},
                               {'gzip_bytes': 30000, 'accuracy': 0.99})
  assert 'differ by -0.50 points' in line and not facts['bar_met']
  assert not facts['accuracy_within_points']
  # More accurate by over 0.1 and smaller by the bar: ahead on both.
  line, facts = collab.verdict({'gzip_bytes': 5991, 'accuracy': 0.9919},
                               {'gzip_bytes': 9076, 'accuracy': 0.9908})
  assert line.startswith('tf-admm\'s file is 1.51x smaller and 0.11 points '
                         'ahead') and facts['bar_met']
  assert not facts['accuracy_within_points']
  # More accurate but not smaller by the bar: no comparison at equal
  # accuracy, and the bar is not met.
  line, facts = collab.verdict({'gzip_bytes': 8000, 'accuracy': 0.9919},
                               {'gzip_bytes': 9076, 'accuracy': 0.9908})
  assert 'differ by +0.11 points' in line and not facts['bar_met']


def test_paired_difference_counts_disagreements_and_its_standard_error():
  # 10,000 images: 50 only tf-admm gets right, 39 only tfmot, 60 neither.
  tfadmm = np.ones(10000, bool)
  tfmot = np.ones(10000, bool)
  tfadmm[:39] = False
  tfmot[39:89] = False
  tfadmm[89:149] = tfmot[89:149] = False
  paired = collab.paired_difference(tfadmm, tfmot)
  assert paired['examples'] == 10000
  assert (paired['only_tfadmm_right'], paired['only_tfmot_right']) == (50, 39)
  assert paired['difference_points'] == pytest.approx(0.11)
  # The variance of a -1/0/+1 variable: P(+1) + P(-1) - mean^2.
  mean = (50 - 39) / 10000
  expected = 100 * np.sqrt(((50 + 39) / 10000 - mean ** 2) / 10000)
  assert paired['standard_error_points'] == pytest.approx(expected)
  assert 0.09 < expected < 0.1  # the size that decides the bar's 0.1 points
  with pytest.raises(ValueError, match='same, nonempty set'):
    collab.paired_difference(tfadmm, tfmot[:10])


def _inputs(settings=None, **epoch_changes):
  run_settings = {'learning_rate': 1e-3, 'batch_size': 128, 'shift_pixels': 2,
                  'seed': 1, 'hold_fraction': 0.3, 'stage_rates': [167.0]}
  epochs = dict({'prune_ramp': 16, 'prune_retrain': 12, 'cluster': 3,
                 'pcqat': 2}, **epoch_changes)
  return collab.phase_inputs({'admm_run': '/runs/pq', 'targets': {}},
                             dict(run_settings, **(settings or {})), 50,
                             epochs, {'fc1': {'clusters': 3}}, 'kmeans++')


def test_phase_inputs_change_only_with_what_each_phase_trains_with():
  base = _inputs()
  # tf-admm's own settings leave every phase as it is.
  assert _inputs({'hold_fraction': 1.0, 'stage_rates': [250.0]}) == base
  # A training setting redoes them all; a phase's epochs, it and later ones.
  assert all(_inputs({'learning_rate': 1e-2})[p] != base[p]
             for p in collab.PHASES)
  changed = _inputs(cluster=5)
  assert [changed[p] == base[p] for p in collab.PHASES] == [True, False, False]
  changed = _inputs(pcqat=4)
  assert [changed[p] == base[p] for p in collab.PHASES] == [True, True, False]


def test_a_channel_runs_fine_tuning_counts_as_retraining():
  report = dict(_report(quantized_epochs=8, stages=(14,)),
                shrunk={'epochs': 4})
  admm = collab.tfadmm_epochs(_run(admm=8, retrain=6), report)
  assert admm == {'pruning': 18, 'ramp': 8, 'retrain': 10,
                  'quantization': 8}


def test_micro_only_redoes_pcqat():
  base = _inputs()
  with_micro = collab.phase_inputs(
      {'admm_run': '/runs/pq', 'targets': {}},
      {'learning_rate': 1e-3, 'batch_size': 128, 'shift_pixels': 2,
       'seed': 1}, 50, {'prune_ramp': 16, 'prune_retrain': 12, 'cluster': 3,
                        'pcqat': 2}, {'fc1': {'clusters': 3}}, 'kmeans++',
      micro=True)
  assert with_micro['prune'] == base['prune']
  assert with_micro['cluster'] == base['cluster']
  assert with_micro['pcqat'] != base['pcqat']


def test_flash_verdict_names_its_size_and_runtime():
  line, facts = collab.verdict({'flash_bytes': 14000, 'accuracy': 0.9925},
                               {'flash_bytes': 250000, 'accuracy': 0.9930},
                               size_bar=None, size='flash_bytes')
  assert line == ('tf-admm\'s file is 17.85x smaller at equal accuracy '
                  '(within 0.1 points).')
  assert facts['flash_bytes_ratio_tfmot_over_tfadmm'] == pytest.approx(
      250000 / 14000)
  assert facts['bar_met'] is None
  line, _ = collab.verdict({'flash_bytes': 14000, 'accuracy': 0.99},
                           {'flash_bytes': 250000, 'accuracy': 0.993},
                           size_bar=None, size='flash_bytes', runtime='TFLM')
  assert line == ('tf-admm\'s file is 17.85x smaller, but the TFLM accuracies '
                  'differ by -0.30 points (tf-admm 99.00%, tfmot 99.30%), '
                  'more than 0.1: no equal-accuracy comparison.')
  line, _ = collab.verdict({'flash_bytes': 14000, 'accuracy': 0.995},
                           {'flash_bytes': 250000, 'accuracy': 0.993},
                           size_bar=None, size='flash_bytes', runtime='TFLM')
  assert line == ('tf-admm\'s file is 17.85x smaller and 0.20 points ahead '
                  'on the test set (tf-admm 99.50%, tfmot 99.30%).')


def test_micro_rows_give_both_sides():
  def report(flash, bits):
    return {'flash_bytes': flash, 'arena_bytes': 13776, 'accuracy': 0.9925,
            'int8_bytes': 19352, 'lut_bits': {'lenet5/fc1/MatMul': bits}}

  rows = collab.micro_rows(report(14024, 4), report(250112, 0))
  assert '| flash bytes (the file as stored) | 14,024 | 250,112 |' in rows
  assert '| TFLM test accuracy | 99.25% | 99.25% |' in rows
  assert rows[-1] == ('| LUT index bits | lenet5/fc1/MatMul 4 | '
                      'lenet5/fc1/MatMul int8 |')
