"""Checks of a run folder's files (tf_admm.run_checks); the progressive
driver's tests damage each file of a finished run."""

import os
import re

import pytest

from tf_admm import keras_compat
from tf_admm import run_checks
from tests.conftest import random_batch, small_model


@pytest.mark.parametrize('metrics, problem', [
    ({}, 'lacks epochs'),
    ([], 'holds a list'),
    ({'epochs': 1, 'seconds': 2, 'val_accuracy': 1.5, 'test_accuracy': 0.5,
      'rate': 2}, 'val_accuracy = 1.5'),
    ({'epochs': 1, 'seconds': 2, 'val_accuracy': 0.5, 'test_accuracy': 0.5},
     'lacks rate'),
    ({'epochs': 'one', 'seconds': 2, 'val_accuracy': 0.5,
      'test_accuracy': 0.5, 'rate': 2}, "epochs = 'one'"),
])
def test_metrics_of_another_form_are_named(metrics, problem):
  with pytest.raises(run_checks.DamagedRunFile,
                     match=f'metrics.json .*{re.escape(problem)}'):
    run_checks.check_metrics('metrics.json', metrics, pruned=True)


@pytest.mark.parametrize('state, problem', [
    ({'stages_done': 1, 'pool': [], 'best': ['a']}, '0 pool unit'),
    ([], 'holds a list'),
    ({'stages_done': 3, 'pool': ['a'], 'best': ['a']}, 'stages_done = 3'),
    ({'stages_done': 1, 'pool': ['b'], 'best': ['b']}, 'names b'),
    ({'stages_done': 1, 'pool': 'a', 'best': ['a']}, "pool = 'a'"),
])
def test_a_pool_of_another_form_is_named(state, problem):
  with pytest.raises(run_checks.DamagedRunFile, match=f'pool.json .*{re.escape(problem)}'):
    run_checks.check_pool('pool.json', state, stage_count=2, candidates=1,
                          finished=lambda name: name == 'a')


@pytest.mark.parametrize('ratios, problem', [
    ({}, 'holds no'), ({'fc9': 0.5}, 'names fc9'),
    ({'fc1': 0}, 'keep ratio 0'), ({'fc1': 'half'}, "keep ratio 'half'")])
def test_an_allocation_of_another_form_is_named(ratios, problem):
  with pytest.raises(run_checks.DamagedRunFile,
                     match=f'allocation.json .*{re.escape(problem)}'):
    run_checks.check_allocation('allocation.json', ratios, ['fc1', 'fc2'])


@pytest.mark.parametrize('keras_version', [2, 3])
@pytest.mark.parametrize('damage', ['truncated', 'swapped'])
def test_a_damaged_backup_restarts_its_fit_instead_of_failing(
    tmp_path, keras_version, damage):
  any_keras = keras_compat.keras_module(keras_version)
  x, y = random_batch(64)

  class StopAtSecondEpoch(any_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      if epoch == 1:
        raise KeyboardInterrupt  # as a killed run: no on_train_end

  def fit(folder, callbacks, seed=0):
    """Epochs run by a fit that backs up into `folder`, its checkpoints
    recorded as the trainer records them."""
    model = small_model(seed=seed, keras=any_keras)
    model.compile('sgd', 'sparse_categorical_crossentropy')
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[
        any_keras.callbacks.BackupAndRestore(folder),
        any_keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, l: run_checks.record_backup(folder)),
        *callbacks])
    return history.epoch

  folder = str(tmp_path / 'unit')
  with pytest.raises(KeyboardInterrupt):
    fit(folder, [StopAtSecondEpoch()])
  checkpoints = [p for p in (tmp_path / 'unit').rglob('*')
                 if p.suffix in ('.h5', '.index', '.data-00000-of-00001')]
  assert checkpoints
  if damage == 'truncated':
    for path in checkpoints:
      path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  else:  # the valid checkpoint of another fit, at the same epoch
    with pytest.raises(KeyboardInterrupt):
      fit(str(tmp_path / 'other'), [StopAtSecondEpoch()], seed=1)
    for path in checkpoints:
      path.write_bytes((tmp_path / 'other' / path.relative_to(
          tmp_path / 'unit')).read_bytes())
  run_checks.drop_damaged_backup(folder)
  assert not os.path.exists(folder + run_checks.BACKUP_CHECKSUMS)
  assert fit(folder, []) == [0, 1, 2]  # from the start, not from epoch 2


def test_an_intact_backup_is_kept(tmp_path):
  (tmp_path / 'unit').mkdir()
  (tmp_path / 'unit' / 'training_metadata.json').write_text('{"epoch": 1}')
  run_checks.record_backup(str(tmp_path / 'unit'))
  run_checks.drop_damaged_backup(str(tmp_path / 'unit'))
  assert (tmp_path / 'unit' / 'training_metadata.json').exists()
