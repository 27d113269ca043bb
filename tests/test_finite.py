"""NaN and Inf stop training at once, naming the layer or the loss."""

import os

import numpy as np
import pytest

import tf_admm
from tf_admm import allocations
from tf_admm import finite
from tf_admm import progressive
from tf_admm.keras_compat import keras
from tests.conftest import file_bytes, random_batch, small_model


def _compiled(model):
  model.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _admm_model():
  return _compiled(tf_admm.attach_admm(small_model(), tf_admm.KeepRatio(0.5)))


def _ramp():
  return tf_admm.PolynomialRamp(fraction=1.0, prune_every_steps=2,
                                lookahead_steps=2)


class Poison(keras.callbacks.Callback):
  """Sets one entry of a layer's kernel to `value` after step `step`."""

  def __init__(self, layer, step, value):
    super().__init__()
    self.layer, self.step, self.value = layer, step, value

  def on_train_batch_end(self, batch, logs=None):
    if batch + 1 == self.step:
      kernel = self.model.get_layer(self.layer).kernel
      values = kernel.numpy()
      values.flat[0] = self.value
      kernel.assign(values)


def test_nan_rows_in_the_data_name_the_loss_at_their_step():
  x, y = random_batch(64)
  x[40:48] = np.nan  # the sixth batch of 8
  model = _admm_model()
  with pytest.raises(finite.NonFiniteError,
                     match=r'The loss became nan 6 steps into ADMM.*'
                     'check the training data'):
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
              callbacks=[tf_admm.AdmmCallback(_ramp())])
  assert model.optimizer.iterations.numpy() == 6  # stopped at once


@pytest.mark.parametrize('value, name', [(np.nan, 'NaN'), (np.inf, 'Inf')])
def test_a_bad_weight_is_named_before_it_is_projected(value, name):
  del name
  x, y = random_batch(64)
  model = _admm_model()
  masks_before = None

  class Masks(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      nonlocal masks_before
      if batch == 2:
        masks_before = {w.path: r.mask.numpy().copy()
                        for w, r in tf_admm.admm_weights(self.model)}

  # Listed first, the poison lands before the ADMM callback's step 4 prune.
  callbacks = [Masks(), Poison('dense', 4, value),
               tf_admm.AdmmCallback(_ramp())]
  with pytest.raises(finite.NonFiniteError,
                     match=r"NaN or Inf weights 4 steps into ADMM in "
                     r"Layer 'dense' \(dense/kernel\): 1 of 192"):
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
              callbacks=callbacks)
  for weight, regularizer in tf_admm.admm_weights(model):
    np.testing.assert_array_equal(regularizer.mask.numpy(),
                                  masks_before[weight.path])


def test_stop_on_non_finite_names_the_layer_and_keeps_finite_weights():
  x, y = random_batch(64)
  model = _compiled(small_model())
  model.fit(x, y, batch_size=8, epochs=1, verbose=0)
  epoch_start = model.get_weights()
  with pytest.raises(finite.NonFiniteError,
                     match=r"step 3 of epoch 1; that step left NaN or Inf "
                     r"weights in Layer 'conv' \(conv/kernel\).* keeps its "
                     r"weights from the start of epoch 1"):
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
              callbacks=[Poison('conv', 2, np.nan),
                         finite.StopOnNonFinite()])
  for kept, before in zip(model.get_weights(), epoch_start):
    np.testing.assert_array_equal(kept, before)


def test_finite_values_pass():
  variables = {'a': keras.backend.variable(np.ones(3))}
  finite.check_weights(variables, 'now')
  finite.check_loss(np.float32(2.5), lambda: variables, 'now')


def test_a_run_that_meets_nan_keeps_its_finished_stages(tmp_path):
  x, y = random_batch(256)
  settings = progressive.Settings(stage_rates=[2.0, 4.0], pretrain_epochs=1,
                                  admm_epochs=1, retrain_epochs=1,
                                  prune_every_steps=2, lookahead_steps=2,
                                  batch_size=32)
  allocate = allocations.global_allocation(4.0)

  def run(x_train):
    data = progressive.Data(x_train, y, x[:64], y[:64], x[:64], y[:64])
    return progressive.ProgressiveRun(small_model, data, allocate, settings,
                                      str(tmp_path), log=lambda line: None)

  good = run(x)
  good.claim()
  good.pretrain()
  finished = file_bytes(tmp_path / 'dense')
  poisoned = x.copy()
  poisoned[100] = np.nan
  with pytest.raises(finite.NonFiniteError, match='The loss became nan'):
    run(poisoned).run()
  assert file_bytes(tmp_path / 'dense') == finished
  assert not os.listdir(tmp_path / 'candidates')
