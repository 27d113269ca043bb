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
