"""A run folder: its finished units of work, written atomically, shared by
the workers of a `tf.distribute` strategy.

A unit (the pretrained model 'dense', a stage's candidate, the quantized or
shrunk model) is a folder holding its model (weights, or the whole model
where its architecture is not the run's), its masks and its metrics.json,
written under a temporary name and renamed: a unit exists whole or not at
all, so a killed run redoes at most the unit in progress (Keras's
BackupAndRestore covers epochs inside it). Each unit records the checksums
of its files, checked before a resumed run trains (`check_unit`). One run
at a time holds the folder (`tf_admm.run_lock`), and a run never writes
into a folder holding files it did not write unless told to. With several
workers
(MultiWorkerMirroredStrategy) only the chief writes, and every worker waits
for each write, then reads the same files; the folder must be one every
worker sees, as for BackupAndRestore.
"""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tf_admm import loading
from tf_admm import run_checks
from tf_admm import run_files
from tf_admm import run_lock

CHECKSUMS = 'checksums.json'
# What a run writes at the top of its folder (besides its units' folders
# and the report the main job adds): a folder holding only these is a run's.
RUN_FILES = ('run.json', run_lock.LOCK_NAME)


def _barrier():
  tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                 tf.constant(1.0))


def check_unit_folder(folder: str, pruned: bool) -> None:
  """Raises `run_checks.DamagedRunFile` naming the first file of the
  finished unit in `folder` that is not as the run wrote it: its files
  against the checksums recorded when it was written (a unit written before
  checksums were is read whole instead), and its metrics."""
  metrics_path = os.path.join(folder, 'metrics.json')
  run_checks.check_metrics(metrics_path, run_files.read_json(metrics_path),
                           pruned)
  recorded_path = os.path.join(folder, CHECKSUMS)
  if not os.path.exists(recorded_path):
    unreadable = run_checks.unreadable_file(folder)
    if unreadable:
      raise run_checks.damaged(*unreadable)
    return
  recorded = run_files.read_json(recorded_path)
  if not isinstance(recorded, dict):
    raise run_checks.damaged(recorded_path, 'is not a {file: sha256} object')
  difference = run_files.first_difference(
      recorded, run_files.checksums(folder, leave_out=CHECKSUMS))
  if difference:
    name, how = difference
    raise run_checks.damaged(os.path.join(folder, name), how)


def check_copy_source(folder: str, what: str, pruned: bool) -> None:
  """Raises unless `folder` holds a finished unit (`what`: 'pretraining')
  as its run wrote it."""
  if not os.path.exists(os.path.join(folder, 'metrics.json')):
    raise ValueError(f'{folder!r} holds no finished {what} (metrics.json is '
                     'missing).')
  check_unit_folder(folder, pruned)


def _same_architecture(model, reference) -> bool:
  return [tuple(w.shape) for w in model.weights] == [
      tuple(w.shape) for w in reference.weights]


class RunStore:
  """The files of the run in `output_dir`, whose models `build_model`
  makes (of the Keras `keras`), under `strategy`; with `overwrite`, in a
  folder that holds other files too."""

  def __init__(self, output_dir: str, build_model: Callable[[], object],
               keras, strategy: tf.distribute.Strategy,
               overwrite: bool = False):
    self.output_dir = output_dir
    self.overwrite = overwrite
    self.build_model = build_model
    self.keras = keras
    self.strategy = strategy
    self._lock_depth = 0

  def path(self, *parts) -> str:
    return os.path.join(self.output_dir, *parts)

  def folder(self, unit: str) -> str:
    """Folder of a unit: 'dense' or a candidate's name."""
    if unit == 'dense':
      return self.path('dense')
    return self.path('candidates', unit)

  def finished(self, unit: str) -> bool:
    return os.path.exists(os.path.join(self.folder(unit), 'metrics.json'))

  def metrics(self, unit: str) -> dict:
    return run_files.read_json(os.path.join(self.folder(unit),
                                            'metrics.json'))

  def units(self) -> list:
    """The names of the finished candidates, sorted."""
    return sorted(name for name in os.listdir(self.path('candidates'))
                  if not name.endswith('.tmp'))

  # Writing, by the chief alone.

  @property
  def is_chief(self) -> bool:
    """Whether this worker writes the run's files (the only one does)."""
    return self.strategy.extended.should_checkpoint

  def write(self, path: str, write: Callable[[str], None]) -> None:
    """`write(path)` on the chief, once every worker has read what it needed
    of the files as they were; returns on every worker once it is done, so
    all of them read the same files next.

    The other workers write to a scratch copy, deleted at once: saving a
    model under MultiWorkerMirroredStrategy reads its variables
    collectively, so every worker must.
    """
    self._wait_for_every_worker()
    if self.is_chief:
      write(path)
    else:
      with tempfile.TemporaryDirectory() as scratch:
        write(os.path.join(scratch, os.path.basename(path)))
    self._wait_for_every_worker()

  def _wait_for_every_worker(self):
    """Returns once every worker has called it: an all-reduce across them
    (one process has nothing to wait for)."""
    if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
      self.strategy.run(_barrier)

  def write_json(self, name: str, payload) -> None:
    """Writes the run-level file `name` (pool.json, ...)."""
    self.write(self.path(name),
               lambda path: run_files.write_json(path, payload))

  def read_json(self, name: str, default=None):
    """The run-level file `name`, or `default` where it is not written."""
    path = self.path(name)
    return run_files.read_json(path) if os.path.exists(path) else default

  def check_folder(self) -> None:
    """Refuses an output folder that exists and holds files of something
    other than a run (no run.json), unless `overwrite`; writes nothing."""
    folder = self.output_dir
    existing = folder  # the folder, or the nearest folder above it
    while not os.path.exists(existing) and os.path.dirname(
        os.path.abspath(existing)) != os.path.abspath(existing):
      existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing):
      raise ValueError(f'Cannot create the output folder {folder!r}: '
                       f'{existing!r} is a file; choose another '
                       '--output_dir.')
    if not os.access(existing, os.W_OK | os.X_OK):
      raise ValueError(f'Cannot write to the output folder {folder!r} '
                       f'({existing!r} is not writable).')
    if self.overwrite or existing != folder:
      return
    names = sorted(os.listdir(folder))
    if 'run.json' in names:
      return
    others = [name for name in names if name not in RUN_FILES]
    if others:
      raise ValueError(
          f'{folder!r} is not a run folder (it has no run.json) and holds '
          f'{", ".join(others[:5])}{", ..." if len(others) > 5 else ""}, '
          'which a run could overwrite: choose another --output_dir, or '
          'pass --overwrite (overwrite=True) to write there anyway.')

  @contextlib.contextmanager
  def locked(self):
    """Holds the run folder while the block runs, creating it (once
    `check_folder` allows); the chief alone locks it, and a second run in
    the same folder is refused at once. A folder this call created is
    removed again if the block fails before any work is in it. Re-entrant:
    the main job holds it over the run and the shipping."""
    if not self.is_chief or self._lock_depth:
      self._lock_depth += 1
      try:
        yield
      finally:
        self._lock_depth -= 1
      return
    self.check_folder()
    created = not os.path.exists(self.output_dir)
    os.makedirs(self.output_dir, exist_ok=True)
    with run_lock.locked(self.output_dir):  # refused: nothing removed
      self._lock_depth += 1
      try:
        yield
      except BaseException:
        if created and not self._holds_work():  # while still holding it
          shutil.rmtree(self.output_dir, ignore_errors=True)
        raise
      finally:
        self._lock_depth -= 1

  def _holds_work(self) -> bool:
    """Whether the folder holds any work: a file other than run.json and
    the lock, anywhere in it."""
    for parent, _, names in os.walk(self.output_dir):
      if parent != self.output_dir and names:
        return True
      if parent == self.output_dir and set(names) - set(RUN_FILES):
        return True
    return False

  def claim(self, description: dict,
            as_written_now: Callable[[dict], dict]) -> None:
    """Creates the run folder, or checks that the run it holds is this one:
    its run.json, read through `as_written_now` (which brings a file an
    older version wrote to today's form), must equal `description`. A run
    with no work in the folder yet (refused or stopped before its first
    epoch ended) gives way."""
    wanted = json.loads(json.dumps(description))
    found = self.read_json('run.json')
    if found is not None and not isinstance(found, dict):
      raise run_checks.damaged(self.path('run.json'),
                               'is not a settings object')
    if found is not None:
      found = as_written_now(found)
    if found is not None and found != wanted:
      differing = sorted(k for k in set(found) | set(wanted)
                         if found.get(k) != wanted.get(k))
      if self._holds_work():
        raise ValueError(
            f'{self.output_dir!r} holds a run with other settings '
            f'(differing: {", ".join(differing)}); choose another output '
            'folder, or rerun with the same flags to resume it.')
      found = None  # nothing of that run is finished: nothing is lost
    if found is None:
      self.write_json('run.json', wanted)
    # After run.json, so that a folder is never a run's without it.
    self.write(self.path('candidates'),
               lambda path: os.makedirs(path, exist_ok=True))

  def check_finished_units(self) -> None:
    """Raises `run_checks.DamagedRunFile` naming the first file of a
    finished unit that is not as the run wrote it."""
    unfinished = [name for name in os.listdir(self.path('candidates'))
                  if not name.endswith('.tmp') and not self.finished(name)]
    if os.path.isdir(self.folder('dense')) and not self.finished('dense'):
      unfinished.append('dense')
    if unfinished:  # units are renamed into place whole, metrics.json in
      raise run_checks.damaged(self.folder(unfinished[0]),
                               'is no finished unit (no metrics.json)')
    for unit in ['dense'] * self.finished('dense') + self.units():
      check_unit_folder(self.folder(unit), pruned=unit != 'dense')

  def save_unit(self, unit: str, model, metrics: dict,
                masks: Optional[dict] = None) -> None:
    """Writes a finished unit whole. A model of another architecture than
    `build_model`'s is saved whole, others as weights."""
    # Every worker builds the reference: making variables is collective.
    whole = not _same_architecture(model, self.build_model())

    def write_unit(temporary):
      if whole:
        model.save(os.path.join(temporary, 'model.keras'))
      else:
        model.save_weights(os.path.join(temporary, 'model.weights.h5'))
      if masks is not None:
        np.savez_compressed(os.path.join(temporary, 'masks.npz'), **masks)
      run_files.write_json(os.path.join(temporary, 'metrics.json'), metrics)
      run_files.write_json(os.path.join(temporary, CHECKSUMS),
                           run_files.checksums(temporary))

    self.write(self.folder(unit), lambda path: (
        run_files.write_folder_atomically(path, write_unit)))

  def copy_unit(self, unit: str, source_folder: str, what: str) -> None:
    """Copies a finished unit of another run (`what`: 'pretraining') in as
    `unit`."""
    check_copy_source(source_folder, what, pruned=unit != 'dense')
    self.write(self.folder(unit),
               lambda path: run_files.copy_folder(source_folder, path))

  # Reading.

  def load_model(self, unit: str):
    folder = self.folder(unit)
    whole = os.path.join(folder, 'model.keras')
    if os.path.exists(whole):
      # A file the run did not write (checksums say) is refused before this.
      return run_files.read(whole, lambda path: loading.load_model(
          path, self.keras))
    model = self.build_model()
    run_files.read(os.path.join(folder, 'model.weights.h5'),
                   model.load_weights)
    return model

  def load_masks(self, unit: str) -> dict:
    return run_files.read(os.path.join(self.folder(unit), 'masks.npz'),
                          run_files.load_npz)

  def load_unit(self, unit: str):
    """(model, masks) of a finished unit; no masks for the dense one."""
    return (self.load_model(unit),
            None if unit == 'dense' else self.load_masks(unit))
