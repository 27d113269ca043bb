"""Keras registration so saved models load after `import tf_admm`.

Without the import Keras finds none of these classes. For tf_keras, and nothing a saved
config can hold makes its errors say `import tf_admm` (a .keras file names
each class's module, but tf_keras imports it only for the model itself, not
for its layers or their regularizers): an H5 file fails with "Unknown layer:
'tf_admm>Name'" or "Unknown regularizer: 'AdmmRegularizer'"; a .keras file
with pruning wrappers fails on a string where a layer should be; a .keras
file under ADMM loads with the string 'AdmmRegularizer' in place of each
regularizer, which `tf_admm.prunable_weights` refuses, naming the fix.

The two Kerases keep separate registries: a class is registered in the one
of the Keras it is built on, and a class built on neither (a constraint,
which both save inside regularizer configs) in both.
"""

from tf_admm.keras_compat import built_on
from tf_admm.keras_compat import keras
from tf_admm.keras_compat import keras3

PACKAGE = 'tf_admm'


def register(cls):
  """Registers `cls` as 'tf_admm>Name' in its Keras's registry.

  In Keras 2 also under its bare class name, by which the legacy H5 and
  SavedModel formats, and tfmot's schedule deserializer, look objects up.
  """
  on_keras3, on_keras2 = built_on(cls, 'keras'), built_on(cls, 'tf_keras')
  if on_keras3 or not on_keras2:
    keras3.saving.register_keras_serializable(package=PACKAGE)(cls)
  if on_keras2 or not on_keras3:
    keras.utils.register_keras_serializable(package=PACKAGE)(cls)
    keras.utils.get_custom_objects()[cls.__name__] = cls
  return cls
