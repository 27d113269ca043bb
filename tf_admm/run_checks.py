"""Checks of a run folder's files, made when a run resumes and before any
training: each file the run will read has the form it was written in, so a
damaged, emptied or swapped file is named before work rather than used
(or failing after hours of it).

Each check raises `DamagedRunFile` (a ValueError) naming the file, what is
wrong with it and how to recover.
"""

import math
import numbers
import os
import shutil

from absl import logging
import h5py

from tf_admm import run_files


class DamagedRunFile(ValueError):
  """A file of a run folder is not what the run wrote."""


def damaged(path: str, problem: str) -> DamagedRunFile:
  return DamagedRunFile(f'{path} {problem}: it was damaged, emptied or '
                        f'replaced. {run_files.RECOVERY}')


def _is_number(value) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, bool) and
          math.isfinite(value))


def _require_dict(path, payload, keys) -> None:
  if not isinstance(payload, dict):
    raise damaged(path, f'holds a {type(payload).__name__}, not an object')
  missing = [key for key in keys if key not in payload]
  if missing:
    raise damaged(path, f'lacks {", ".join(missing)}')


# What every unit's metrics.json holds, and the rule each value follows.
_METRICS = {
    'epochs': lambda v: _is_number(v) and v >= 0,
    'seconds': lambda v: _is_number(v) and v >= 0,
    'val_accuracy': lambda v: _is_number(v) and 0 <= v <= 1,
    'test_accuracy': lambda v: _is_number(v) and 0 <= v <= 1,
}


def check_metrics(path: str, metrics, pruned: bool) -> None:
  """A unit's metrics.json; `pruned`: a unit after pretraining, which
  records its compression rate."""
  rules = dict(_METRICS, **({'rate': lambda v: _is_number(v) and v >= 1}
                            if pruned else {}))
  _require_dict(path, metrics, rules)
  for key, valid in rules.items():
    if not valid(metrics[key]):
      raise damaged(path, f'has {key} = {metrics[key]!r}')


def check_pool(path: str, state, stage_count: int, candidates: int,
               finished) -> None:
  """pool.json: {'stages_done', 'pool', 'best'} of a run of `stage_count`
  stages and pool size `candidates`, naming units for which
  `finished(name)` holds."""
  _require_dict(path, state, ('stages_done', 'pool', 'best'))
  done = state['stages_done']
  if not (isinstance(done, int) and not isinstance(done, bool) and
          0 <= done <= stage_count):
    raise damaged(path, f'has stages_done = {done!r} in a run of '
                  f'{stage_count} stages')
  for key, count in (('pool', (1 if done else 0, candidates)),
                     ('best', (done, done))):
    names = state[key]
    if not (isinstance(names, list) and
            all(isinstance(n, str) for n in names)):
      raise damaged(path, f'has {key} = {names!r}, not a list of unit names')
    if not count[0] <= len(names) <= count[1]:
      raise damaged(path, f'has {len(names)} {key} unit(s) after {done} '
                    'stage(s)')
    missing = [name for name in names if not finished(name)]
    if missing:
      raise damaged(path, f'names {", ".join(missing)}, which the run has '
                    'not finished')


def check_allocation(path: str, ratios, layers) -> None:
  """allocation.json: {layer name: keep ratio in (0, 1]} over `layers`."""
  if not isinstance(ratios, dict) or not ratios:
    raise damaged(path, 'holds no {layer: keep ratio} entries')
  unknown = sorted(set(ratios) - set(layers))
  if unknown:
    raise damaged(path, f'names {", ".join(unknown)}, which are not layers '
                  'of the model')
  for layer, ratio in ratios.items():
    if not (_is_number(ratio) and 0 < ratio <= 1):
      raise damaged(path, f'gives {layer} the keep ratio {ratio!r}')


def read_h5(path):
  with h5py.File(path, 'r') as f:
    f.visititems(lambda name, item: item[()]
                 if isinstance(item, h5py.Dataset) else None)


def _read_checkpoint(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  prefix = path[:-len('.index')]
  reader = tf.train.load_checkpoint(prefix)
  for name in reader.get_variable_to_shape_map():
    reader.get_tensor(name)


# How each kind of file a run writes is read whole (a BackupAndRestore
# folder holds Keras 3's weights and metadata, or Keras 2's TensorFlow
# checkpoint).
_READERS = {'.h5': read_h5, '.json': run_files.load_json,
            '.index': _read_checkpoint, '.npz': run_files.load_npz}


def unreadable_file(folder: str):
  """(path, why) of the first file under `folder` that cannot be read whole,
  or None."""
  for parent, _, names in os.walk(folder):
    for name in sorted(names):
      path = os.path.join(parent, name)
      reader = _READERS.get(os.path.splitext(name)[1])
      if reader is None:
        continue
      try:
        reader(path)
      except Exception as error:  # h5py and TensorFlow raise many kinds
        return path, f'cannot be read ({run_files.describe_error(error)})'
  return None


# Beside a BackupAndRestore folder: the checksums of its files after the
# last epoch Keras saved (outside it, as Keras deletes the folder at the end
# of its fit).
BACKUP_CHECKSUMS = '.checksums.json'
# Keras 2's scratch folders of the other workers, written and deleted at
# each epoch's end: not the checkpoint.
_WORKER_SCRATCH = 'workertemp_'


def _backup_checksums(folder: str) -> dict:
  return run_files.checksums(folder, skip_prefix=_WORKER_SCRATCH)


def record_backup(folder: str) -> None:
  """Records the checksums of the BackupAndRestore folder `folder`'s files,
  as Keras has just written them (at an epoch's end)."""
  if os.path.isdir(folder):
    run_files.write_json(folder + BACKUP_CHECKSUMS,
                         _backup_checksums(folder))


def forget_backup(folder: str) -> None:
  """Drops the checksums of a BackupAndRestore folder whose fit ended."""
  if os.path.exists(folder + BACKUP_CHECKSUMS):
    os.remove(folder + BACKUP_CHECKSUMS)


def _backup_problem(folder: str):
  """(path, why) of the first file of the BackupAndRestore folder `folder`
  that is not the last epoch's checkpoint (by its checksums) or cannot be
  read whole, or None."""
  recorded_path = folder + BACKUP_CHECKSUMS
  if os.path.exists(recorded_path):
    try:
      recorded = run_files.load_json(recorded_path)
    except ValueError:
      recorded = None
    if not isinstance(recorded, dict):
      return recorded_path, 'is not a {file: sha256} object'
    difference = run_files.first_difference(recorded,
                                            _backup_checksums(folder))
    if difference:
      name, how = difference
      return os.path.join(folder, name), how
  return unreadable_file(folder)


def drop_damaged_backup(folder: str) -> None:
  """Checks the BackupAndRestore folder `folder` against the checksums of
  the last epoch saved, and reads its files whole; if one differs or cannot
  be read, logs which and deletes the folder, so the fit it belongs to
  starts again from its beginning (losing that fit's epochs, not the
  run)."""
  if not os.path.isdir(folder):
    return
  problem = _backup_problem(folder)
  if problem:
    logging.warning('%s %s: the checkpoint of the fit it belongs to is '
                    'damaged, so that fit starts again from its beginning.',
                    *problem)
    shutil.rmtree(folder)
    forget_backup(folder)
