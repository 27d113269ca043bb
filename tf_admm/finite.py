"""Stopping training at the first NaN or Inf, naming where it is.

A NaN kernel projects to an empty mask and NaN x 0 breaks the held zeros, so
letting training go on only moves the error somewhere harder to read.
"""

from typing import Callable

import numpy as np

from tf_admm import keras_compat


class NonFiniteError(ValueError):
  """The loss or a weight became NaN or Inf."""


def _non_finite(variables) -> list:
  """Descriptions of those of `variables` ({name: variable}) holding a NaN
  or Inf, with how many entries."""
  found = []
  for name, variable in variables.items():
    values = variable.numpy()
    bad = np.count_nonzero(~np.isfinite(values))
    if bad:
      found.append(f'{name}: {bad} of {values.size}')
  return found


def check_weights(variables, when: str) -> None:
  """Raises NonFiniteError naming those of `variables` ({name: variable},
  the name saying which layer's weight it is) that hold a NaN or Inf."""
  bad = _non_finite(variables)
  if bad:
    raise NonFiniteError(
        f'NaN or Inf weights {when} in {"; ".join(bad)}: lower the learning '
        'rate (or rho), or check the training data for NaN or Inf values.')


def check_loss(loss, variables: Callable[[], dict], when: str) -> None:
  """Raises NonFiniteError if `loss` is NaN or Inf, naming the weights of
  `variables()` that have become so too."""
  loss = float(loss)
  if np.isfinite(loss):
    return
  bad = _non_finite(variables())
  weights = (f'; that step left NaN or Inf weights in {"; ".join(bad)}'
             if bad else '; every weight is still finite')
  raise NonFiniteError(
      f'The loss became {loss} {when}{weights}: check the training data for '
      'NaN or Inf values, or lower the learning rate (or rho).')


def model_variables(model) -> dict:
  """{"Layer 'name' (variable path)": variable} of every weight of `model`."""
  found = {}
  for variable in model.weights:
    path = keras_compat.variable_path(variable)
    found[f'Layer {path.rsplit("/", 1)[0]!r} ({path})'] = variable
  return found


class StopOnNonFinite(keras_compat.BatchHookCallback):
  """Stops `model.fit` with a NonFiniteError at the first step whose loss
  is NaN or Inf, naming the layer whose weights are, if any (Keras's
  `TerminateOnNaN` stops quietly and names nothing), and gives the model
  back the weights it had at the start of that epoch, as a BackupAndRestore
  checkpoint holds them on disk (the optimizer's state is not put back)."""

  def __init__(self):
    super().__init__()
    self._epoch = 0
    self._finite = None  # the weights at the start of the epoch

  def needs_batch_hooks(self):
    return True

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._finite = [variable.numpy() for variable in self.model.weights]

  def on_train_batch_end(self, batch, logs=None):
    if not logs or 'loss' not in logs:
      return
    try:
      check_loss(logs['loss'], lambda: model_variables(self.model),
                 f'at step {batch + 1} of epoch {self._epoch + 1}')
    except NonFiniteError as error:
      for variable, value in zip(self.model.weights, self._finite):
        variable.assign(value)
      raise NonFiniteError(f'{error} The model keeps its weights from the '
                           f'start of epoch {self._epoch + 1}.') from None
