import numpy as np

from tf_admm import constraints
from tf_admm import report
from tf_admm.keras_compat import keras
from tests.conftest import small_model


def test_constraints_hold_only_when_projecting_changes_nothing():
  model = small_model()
  kernel = model.get_layer('dense').kernel
  allowed = np.ones(kernel.shape, bool)
  pattern = constraints.NOutOfM(1, 4, axis=0)
  configs = {'dense/kernel': keras.utils.serialize_keras_object(pattern)}
  masks = {'dense/kernel': allowed}
  assert not report.constraints_hold(model, masks, configs)  # dense
  kernel.assign(pattern.project(kernel.numpy(), allowed).values)
  assert report.constraints_hold(model, masks, configs)
  masks['dense/kernel'] = np.zeros(kernel.shape, bool)  # nothing allowed
  assert not report.constraints_hold(model, masks, configs)
  assert report.constraint_kind(configs['dense/kernel']) == 'NOutOfM'
  assert report.constraint_kind(None) == 'none'


def test_constraints_hold_for_levels_and_masks_narrowed_after_training():
  model = small_model()
  kernel = model.get_layer('dense').kernel
  allowed = np.random.default_rng(0).random(kernel.shape) < 0.5
  levels = constraints.Quantize('uniform', bits=2, axis=-1)
  configs = {'dense/kernel': keras.utils.serialize_keras_object(levels)}
  masks = {'dense/kernel': allowed}
  assert not report.constraints_hold(model, masks, configs)
  kernel.assign(levels.project(kernel.numpy(), allowed).values)
  assert report.constraints_hold(model, masks, configs)
  kernel.assign(kernel * 1.01 + 1e-3 * allowed)  # off the levels
  assert not report.constraints_hold(model, masks, configs)
  # A count above what a narrowed mask allows is checked at the mask.
  top = constraints.KeepLargest(keep=int(allowed.sum()))
  kernel.assign(np.where(allowed, kernel.numpy(), 0))
  narrowed = allowed & (np.arange(allowed.size).reshape(allowed.shape) % 2 == 0)
  kernel.assign(np.where(narrowed, kernel.numpy(), 0))
  assert report.constraints_hold(
      model, {'dense/kernel': narrowed},
      {'dense/kernel': keras.utils.serialize_keras_object(top)})


def test_weight_storage_reads_bits_from_the_constraints():
  model = small_model()
  configs = {'dense/kernel': keras.utils.serialize_keras_object(
      constraints.Quantize('ternary', axis=-1))}
  stored = report.weight_storage(model, configs)
  assert stored['weights']['dense/kernel']['bits'] == 1  # a sign per nonzero
  assert stored['weights']['conv/kernel']['bits'] == 32  # not quantized
