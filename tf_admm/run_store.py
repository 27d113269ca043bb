"""A run folder: its finished units of work, written atomically, shared by
the workers of a `tf.distribute` strategy.

A unit (the pretrained model 'dense', a stage's candidate, the quantized or
shrunk model) is a folder holding its model (weights, or the whole model
where its architecture is not the run's), its masks and its metrics.json,
written under a temporary name and renamed: a unit exists whole or not at
all, so a killed run redoes at most the unit in progress (Keras's
BackupAndRestore covers epochs inside it). With several workers
(MultiWorkerMirroredStrategy) only the chief writes, and every worker waits
for each write, then reads the same files; the folder must be one every
worker sees, as for BackupAndRestore.
"""

import json
import os
import tempfile
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tf_admm import run_files


def _barrier():
  tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                 tf.constant(1.0))


def _same_architecture(model, reference) -> bool:
  return [tuple(w.shape) for w in model.weights] == [
      tuple(w.shape) for w in reference.weights]


class RunStore:
  """The files of the run in `output_dir`, whose models `build_model`
  makes (of the Keras `keras`), under `strategy`."""

  def __init__(self, output_dir: str, build_model: Callable[[], object],
               keras, strategy: tf.distribute.Strategy):
    self.output_dir = output_dir
    self.build_model = build_model
    self.keras = keras
    self.strategy = strategy

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

  def claim(self, description: dict,
            as_written_now: Callable[[dict], dict]) -> None:
    """Creates the run folder, or checks that the run it holds is this one:
    its run.json, read through `as_written_now` (which brings a file an
    older version wrote to today's form), must equal `description`."""
    self.write(self.path('candidates'),
               lambda path: os.makedirs(path, exist_ok=True))
    if self.is_chief and not os.access(self.output_dir, os.W_OK):
      raise ValueError(f'Cannot write to {self.output_dir!r}.')
    wanted = json.loads(json.dumps(description))
    found = self.read_json('run.json')
    if found is None:
      self.write_json('run.json', wanted)
      return
    found = as_written_now(found)
    if found != wanted:
      differing = sorted(k for k in set(found) | set(wanted)
                         if found.get(k) != wanted.get(k))
      raise ValueError(
          f'{self.output_dir!r} holds a run with other settings (differing: '
          f'{", ".join(differing)}); choose another output folder, or rerun '
          'with the same flags to resume it.')

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

    self.write(self.folder(unit), lambda path: (
        run_files.write_folder_atomically(path, write_unit)))

  def copy_unit(self, unit: str, source_folder: str, what: str) -> None:
    """Copies a finished unit of another run (`what`: 'pretraining') in as
    `unit`."""
    if not os.path.exists(os.path.join(source_folder, 'metrics.json')):
      raise ValueError(f'{source_folder!r} holds no finished {what} '
                       '(metrics.json is missing).')
    self.write(self.folder(unit),
               lambda path: run_files.copy_folder(source_folder, path))

  # Reading.

  def load_model(self, unit: str):
    folder = self.folder(unit)
    whole = os.path.join(folder, 'model.keras')
    if os.path.exists(whole):
      return run_files.read(whole, lambda path: self.keras.models.load_model(
          path, compile=False))
    model = self.build_model()
    run_files.read(os.path.join(folder, 'model.weights.h5'),
                   model.load_weights)
    return model

  def load_masks(self, unit: str) -> dict:
    def read(path):
      with np.load(path) as masks:
        return {name: masks[name] for name in masks.files}
    return run_files.read(os.path.join(self.folder(unit), 'masks.npz'), read)

  def load_unit(self, unit: str):
    """(model, masks) of a finished unit; no masks for the dense one."""
    return (self.load_model(unit),
            None if unit == 'dense' else self.load_masks(unit))
