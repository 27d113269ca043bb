"""The progressive driver on a small slice of MNIST."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tf_admm import allocations
from tf_admm import constraints
from tf_admm import keras_compat
from tf_admm import models
from tf_admm import progressive
from tf_admm import run_lock
from tf_admm import run_steps
from tf_admm import run_store
from tf_admm import schedules
from tests.conftest import file_bytes, random_batch, small_model


@pytest.fixture(scope='module')
def data(mnist):
  x, y, x_test, y_test = mnist
  return progressive.Data(x[:3000], y[:3000], x[3000:3500], y[3000:3500],
                          x_test[:1000], y_test[:1000])


def _run(data, output_dir, **kwargs):
  settings = progressive.Settings(stage_rates=[4.0, 8.0], pretrain_epochs=1,
                                  admm_epochs=1, retrain_epochs=1,
                                  prune_every_steps=5, lookahead_steps=10)
  return progressive.ProgressiveRun(
      models.lenet300_100, data,
      allocations.profile_allocation(models.KEEP_RATIO_PROFILES[
          'lenet300_100'], 8.0), settings, str(output_dir),
      log=lambda line: None, **kwargs)


def test_ramped_stages_reach_their_rates_and_share_a_pretraining(data,
                                                                 tmp_path):
  first = _run(data, tmp_path / 'first').run()
  assert [s['rate'] for s in first['stages']] == pytest.approx([4.0, 8.0],
                                                               rel=0.01)
  assert first['stages'][-1]['test_accuracy'] > 0.8
  second_run = _run(data, tmp_path / 'second',
                    pretrained_dir=str(tmp_path / 'first' / 'dense'))
  second_run.pretrain()
  # The second run starts from the first one's dense model, untrained again.
  copied = models.lenet300_100()
  copied.load_weights(str(tmp_path / 'second' / 'dense' / 'model.weights.h5'))
  for a, b in zip(first['dense_model'].get_weights(), copied.get_weights()):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='no finished pretraining'):
    _run(data, tmp_path / 'third', pretrained_dir=str(tmp_path / 'nowhere'))
  assert not os.path.exists(tmp_path / 'third')


def test_a_pattern_with_rates_reaches_every_stage(data, tmp_path):
  # 2:4 caps every LeNet-300-100 layer at half its weights; the stages'
  # targets must respect that, or stage 2 would ask for more than stage 1
  # left.
  summary = _run(data, tmp_path / 'nm',
                 constraint=constraints.NOutOfM(2, 4)).run()
  assert [s['rate'] for s in summary['stages']] == pytest.approx([4.0, 8.0],
                                                                 rel=0.01)
  for layer in summary['final_model'].layers[1:]:
    # Groups of 4 consecutive inputs (axis 0 of a Dense kernel).
    inputs_last = np.moveaxis(layer.kernel.numpy(), 0, -1)
    groups = np.count_nonzero(inputs_last.reshape(-1, 4), axis=-1)
    assert groups.max() <= 2, layer.name


def _tiny_run(output_dir, build_model=small_model, seed=0):
  x, y = random_batch(256)
  data = progressive.Data(x, y, x[:64], y[:64], x[:64], y[:64])
  settings = progressive.Settings(stage_rates=[2.0], pretrain_epochs=1,
                                  admm_epochs=1, retrain_epochs=1,
                                  prune_every_steps=2, lookahead_steps=2,
                                  batch_size=32, seed=seed)
  return progressive.ProgressiveRun(build_model, data,
                                    allocations.global_allocation(2.0),
                                    settings, str(output_dir),
                                    log=lambda line: None)


@pytest.mark.parametrize('keras_version', [2, 3])
def test_the_seed_fixes_the_pretrained_model(tmp_path, keras_version):
  any_keras = keras_compat.keras_module(keras_version)

  def unseeded_model():
    """Like `small_model`, but its initial weights are whatever the global
    random state gives."""
    return any_keras.Sequential([any_keras.Input((6, 6, 1)),
                                 any_keras.layers.Flatten(name='flatten'),
                                 any_keras.layers.Dense(3, name='dense')])

  def pretrained(folder, seed):
    run = _tiny_run(tmp_path / folder, unseeded_model, seed)
    run.pretrain()
    model = unseeded_model()
    model.load_weights(str(tmp_path / folder / 'dense' / 'model.weights.h5'))
    return model.get_weights()

  first = pretrained('first', seed=1)
  any_keras.utils.set_random_seed(99)  # as if other work ran in between
  for a, b in zip(first, pretrained('again', seed=1)):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], pretrained('other', seed=2)[0])
  with pytest.raises(ValueError, match=r'seed must be in \[0, 2\*\*32\)'):
    _tiny_run(tmp_path / 'negative', unseeded_model, seed=-1)


@pytest.fixture(scope='module')
def finished_tiny_run(tmp_path_factory):
  folder = tmp_path_factory.mktemp('tiny') / 'run'
  _tiny_run(folder).run()
  return folder


# Another file of the same kind in the finished tiny run, whose content
# is valid where it is but wrong here.
_SWAPS = {'dense/metrics.json': 'candidates/s00_c0/metrics.json',
          'candidates/s00_c0/metrics.json': 'dense/metrics.json',
          'dense/model.weights.h5': 'candidates/s00_c0/model.weights.h5',
          'candidates/s00_c0/model.weights.h5': 'dense/model.weights.h5',
          'candidates/s00_c0/masks.npz': None,  # all ones instead
          'pool.json': 'allocation.json', 'allocation.json': 'pool.json',
          'run.json': 'pool.json'}


def _damage(folder, name, how):
  path = folder / name
  if how == 'truncated':
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  elif how == 'empty object':
    path.write_text('{}')
  elif how == 'wrong type':
    path.write_text('[1, 2]')
  elif _SWAPS[name] is None:
    with np.load(path) as masks:
      np.savez(path, **{k: np.ones_like(masks[k]) for k in masks.files})
  else:
    path.write_bytes((folder / _SWAPS[name]).read_bytes())
  return path


@pytest.mark.parametrize('how', ['truncated', 'empty object', 'wrong type',
                                 'swapped'])
@pytest.mark.parametrize('name', list(_SWAPS))
def test_a_damaged_run_file_is_named_before_any_training(
    finished_tiny_run, tmp_path, name, how):
  folder = tmp_path / 'run'
  shutil.copytree(finished_tiny_run, folder)
  damaged = _damage(folder, name, how)
  before = file_bytes(folder)
  run = _tiny_run(folder)
  run.context.trainer.fit = None  # any training fails the test
  # run.json is compared with the run's settings instead.
  named = re.escape(str(damaged)) + ('|other settings' if name == 'run.json'
                                     else '')
  with pytest.raises(ValueError, match=named):
    run.run()
  assert file_bytes(folder) == before


def test_a_run_written_before_a_constraint_field_existed_resumes(tmp_path):
  def with_quantization(levels):
    run = _tiny_run(tmp_path)
    return progressive.ProgressiveRun(
        run.store.build_model, run.context.trainer.data, run.allocate,
        run.settings,
        str(tmp_path), log=lambda line: None,
        quantization={'dense': constraints.Quantize(levels)})

  old = with_quantization('binary').description
  del old['quantization']['dense']['config']['train_scale']  # added later
  (tmp_path / 'run.json').write_text(json.dumps(old))
  with_quantization('binary').claim()
  (tmp_path / 'dense').mkdir()  # as if pretraining had finished
  (tmp_path / 'dense' / 'metrics.json').write_text('{}')
  with pytest.raises(ValueError, match='differing: quantization'):
    with_quantization('ternary').claim()


def test_a_run_with_no_work_done_gives_way_to_other_settings(tmp_path):
  _tiny_run(tmp_path).claim()
  (tmp_path / 'backup' / 'dense').mkdir(parents=True)  # no epoch ended
  _tiny_run(tmp_path, seed=1).claim()
  assert json.loads((tmp_path / 'run.json').read_text())['settings'][
      'seed'] == 1
  (tmp_path / 'backup' / 'dense' / 'latest.weights.h5').write_text('')
  with pytest.raises(ValueError, match='differing: settings'):
    _tiny_run(tmp_path, seed=2).claim()


@pytest.mark.parametrize('updates_per_epoch, epochs_per_round', [
    (1, 1.0),  # the default: the one update falls on the hard projection
    (10, 1.0),  # ten updates an epoch, as paper_quantized and demo
    (1, 15.0),  # binary: one 15-epoch round, an update each epoch
    (4, 0.5),
])
def test_quantization_rounds_update_as_often_as_the_settings_say(
    updates_per_epoch, epochs_per_round):
  settings = progressive.Settings(
      stage_rates=[2.0], hold_fraction=0.5,
      quantize_epochs_per_round=epochs_per_round, quantize_rho_growth=1.5,
      quantize_updates_per_epoch=updates_per_epoch)
  rounds = run_steps.quantization_rounds(settings).bind(schedules.FitInfo(
      steps_per_epoch=40, epochs=30, start_rate=1, final_rate=1))
  round_steps = int(40 * epochs_per_round)
  assert [s for s in range(1, 2 * round_steps + 1) if rounds.prunes_at(s)
          ] == [round_steps, 2 * round_steps]
  # Evenly spaced updates; the one at a round's end is its hard projection.
  every = 40 // updates_per_epoch
  assert [s for s in range(1, round_steps + 1) if rounds.updates_at(s)] == (
      list(range(every, round_steps + 1, every)))
  assert rounds.rho_growth == 1.5


@pytest.mark.parametrize('name, value, rule', [
    ('hold_fraction', 0.0, 'in (0, 1]'),
    ('hold_fraction', 1.5, 'in (0, 1]'),
    ('quantize_epochs_per_round', 0.0, '> 0'),
    ('quantize_rho_growth', 0.9, '>= 1'),
])
def test_bad_quantization_settings_are_named(name, value, rule):
  with pytest.raises(ValueError, match=re.escape(
      f'{name} must be {rule}, got {value}.')):
    progressive.Settings(stage_rates=[2.0], **{name: value})


def test_levels_as_the_stages_constraint_are_refused_before_training(
    data, tmp_path):
  with pytest.raises(ValueError, match='has levels.*quantization='):
    _run(data, tmp_path, constraint=constraints.Quantize('ternary'))
  assert not os.path.exists(tmp_path / 'dense')


def test_quantization_updates_per_epoch_must_be_at_least_one():
  with pytest.raises(ValueError, match='quantize_updates_per_epoch must be '
                     '>= 1, got 0'):
    progressive.Settings(stage_rates=[2.0], quantize_updates_per_epoch=0)


def test_a_folder_holding_other_files_is_refused_unless_overwrite(tmp_path):
  (tmp_path / 'report.md').write_text('mine')
  (tmp_path / 'tflite').mkdir()
  (tmp_path / 'tflite' / 'int8.tflite').write_bytes(b'mine too')
  before = file_bytes(tmp_path)
  with pytest.raises(ValueError, match=r"not a run folder .* holds "
                     r"report.md, tflite, which a run could overwrite"):
    _tiny_run(tmp_path)
  assert file_bytes(tmp_path) == before
  run = progressive.ProgressiveRun(
      small_model, _tiny_run(tmp_path / 'other').context.trainer.data,
      allocations.global_allocation(2.0),
      progressive.Settings(stage_rates=[2.0]), str(tmp_path),
      overwrite=True)
  run.claim()  # allowed in
  assert (tmp_path / 'run.json').exists()


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
  run = _tiny_run(tmp_path / 'run')
  run.pretrain = lambda: (_ for _ in ()).throw(ValueError('refused'))
  with pytest.raises(ValueError, match='refused'):
    run.run()
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('settings, message', [
    # conv's 36 weights and dense's 192 down to 1 each: 228 / 2 = 114.
    (dict(stage_rates=[2.0, 1e12]),
     r'A compression rate of 1e\+12x is out of reach: with every pruned '
     r'layer \(conv, dense\) down to one weight per tensor, the model is '
     r'114.0x smaller'),
    (dict(stage_rates=[2.0], shift_pixels=6),
     r"shift_pixels \(6\) must be less than the images' height and width "
     r'\(6x6\)'),
    (dict(stage_rates=[2.0], quantize_epochs_per_round=float('inf')),
     'quantize_epochs_per_round must be a finite number, got inf'),
    (dict(stage_rates=[2.0], rho='0.1'),
     "rho must be a finite number, got '0.1'"),
    (dict(stage_rates=[2.0], batch_size=32.5),
     'batch_size must be a whole number, got 32.5'),
])
def test_requests_that_cannot_be_met_are_refused_before_any_work(
    tmp_path, settings, message):
  x, y = random_batch(64)
  data = progressive.Data(x, y, x, y, x, y)
  with pytest.raises(ValueError, match=message):
    progressive.ProgressiveRun(small_model, data,
                               allocations.global_allocation(2.0),
                               progressive.Settings(**settings),
                               str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_keras3_under_several_workers_is_refused_before_any_work(tmp_path):
  # A bare instance: the refusal reads only the strategy's class, and a real
  # MultiWorkerMirroredStrategy would set up collectives in this process.
  several_workers = object.__new__(tf.distribute.MultiWorkerMirroredStrategy)
  x, y = random_batch(64)
  with pytest.raises(ValueError, match='Keras 3 models do not train under '
                     'MultiWorkerMirroredStrategy'):
    progressive.ProgressiveRun(
        lambda: small_model(keras=keras_compat.keras3),
        progressive.Data(x, y, x, y, x, y),
        allocations.global_allocation(2.0),
        progressive.Settings(stage_rates=[2.0]), str(tmp_path / 'run'),
        strategy=several_workers)
  assert not (tmp_path / 'run').exists()


def test_a_second_run_refused_at_the_lock_removes_nothing(tmp_path,
                                                          monkeypatch):
  run = _tiny_run(tmp_path / 'run')  # the folder does not exist yet

  def held_by_another(folder):
    # Another run made the folder and wrote into it meanwhile.
    (tmp_path / 'run' / 'run.json').write_text('{}')
    raise run_lock.RunFolderBusy(f'{folder!r} is in use')

  monkeypatch.setattr(run_store.run_lock, 'locked', held_by_another)
  with pytest.raises(run_lock.RunFolderBusy):
    with run.store.locked():
      pass
  assert (tmp_path / 'run' / 'run.json').read_text() == '{}'


def test_a_dense_folder_without_metrics_is_named_before_training(
    finished_tiny_run, tmp_path):
  folder = tmp_path / 'run'
  shutil.copytree(finished_tiny_run, folder)
  (folder / 'dense' / 'metrics.json').unlink()
  run = _tiny_run(folder)
  run.context.trainer.fit = None  # any training fails the test
  with pytest.raises(ValueError, match='dense is no finished unit'):
    run.run()


def test_a_stage_the_constraint_cannot_reach_is_refused_before_training(
    tmp_path):
  x, y = random_batch(64)
  with pytest.raises(ValueError, match='rate 1.2 keeps more weights than the '
                     'constraints allow'):
    progressive.ProgressiveRun(
        small_model, progressive.Data(x, y, x, y, x, y),
        allocations.global_allocation(1.2),
        progressive.Settings(stage_rates=[1.2]), str(tmp_path / 'run'),
        constraint=constraints.NOutOfM(1, 4))  # at most 1 in 4 kept: >= 4x
  assert not (tmp_path / 'run').exists()
