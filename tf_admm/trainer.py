"""The training recipe every step of a run shares: Adam, optionally
cosine-decayed, on the training split (shifted images if asked), resumable
per epoch, stopped at the first non-finite loss or weight."""

import sys
import zlib

import numpy as np

from tf_admm import datasets
from tf_admm import finite
from tf_admm import run_checks


def accuracy(model, x, y) -> float:
  logits = model.predict(x, batch_size=1000, verbose=0)
  return float(np.mean(np.argmax(logits, -1) == y))


class Trainer:
  """Compiles and fits a run's models.

  Args:
    data: a `tf_admm.progressive.Data`.
    settings: a `tf_admm.progressive.Settings` (batch size, learning rate,
      shifts, seed).
    keras: the Keras module of the run's models.
    backup_folder: `backup_folder(unit)`, where a fit of `unit` keeps its
      BackupAndRestore checkpoint.
    records_backups: whether this worker (the chief) records the checksums
      of each epoch's checkpoint (`tf_admm.run_checks.record_backup`).
  """

  def __init__(self, data, settings, keras, backup_folder,
               records_backups=True):
    self.data = data
    self.settings = settings
    self.keras = keras
    self.backup_folder = backup_folder
    self.records_backups = records_backups

  @property
  def steps_per_epoch(self) -> int:
    return -(-len(self.data.x_train) // self.settings.batch_size)

  def compile(self, model, decay_epochs=None):
    """Adam at the run's learning rate; cosine-decayed to 0 over
    `decay_epochs` when given (masked retraining settles that way)."""
    learning_rate = self.settings.learning_rate
    if decay_epochs:
      learning_rate = self.keras.optimizers.schedules.CosineDecay(
          learning_rate, decay_steps=decay_epochs * self.steps_per_epoch)
    model.compile(
        self.keras.optimizers.Adam(learning_rate),
        self.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=['accuracy'])
    return model

  def fit(self, model, unit: str, epochs: int, callbacks=()) -> None:
    """model.fit on the training split, resumable per epoch; the seed of
    its batches is the run's, mixed with the unit's name."""
    self.keras.utils.set_random_seed(
        (self.settings.seed + zlib.crc32(unit.encode())) % 2**32)
    folder = self.backup_folder(unit)
    backups = [self.keras.callbacks.BackupAndRestore(folder)]
    if self.records_backups:  # after Keras has saved the epoch
      backups.append(self.keras.callbacks.LambdaCallback(
          on_epoch_end=lambda epoch, logs: run_checks.record_backup(folder),
          on_train_end=lambda logs: run_checks.forget_backup(folder)))
    if self.settings.shift_pixels:
      inputs = dict(x=datasets.shifted_batches(
          self.data.x_train, self.data.y_train, self.settings.batch_size,
          self.settings.shift_pixels, self.settings.seed))
    else:
      inputs = dict(x=self.data.x_train, y=self.data.y_train,
                    batch_size=self.settings.batch_size)
    # Before ADMM's own checks: it puts the last finite weights back.
    model.fit(**inputs, epochs=epochs,
              verbose=1 if sys.stdout.isatty() else 2,  # bars, or a line
              callbacks=[*backups, finite.StopOnNonFinite(), *callbacks])

  def val_accuracy(self, model) -> float:
    return accuracy(model, self.data.x_val, self.data.y_val)

  def test_accuracy(self, model) -> float:
    return accuracy(model, self.data.x_test, self.data.y_test)
