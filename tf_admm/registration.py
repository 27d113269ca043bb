"""Keras registration so saved models load after `import tf_admm`.

Without the import tf_keras finds none of these classes, and nothing a saved
config can hold makes its errors say `import tf_admm` (a .keras file names
each class's module, but tf_keras imports it only for the model itself, not
for its layers or their regularizers): an H5 file fails with "Unknown layer:
'tf_admm>Name'" or "Unknown regularizer: 'AdmmRegularizer'"; a .keras file
with pruning wrappers fails on a string where a layer should be; a .keras
file under ADMM loads with the string 'AdmmRegularizer' in place of each
regularizer, which `tf_admm.prunable_weights` refuses, naming the fix.
"""

from tf_admm.keras_compat import keras


def register(cls):
  """Registers `cls` under its package name and its bare class name.

  Keras's own format looks objects up as 'tf_admm>Name'; the legacy H5 and
  SavedModel formats, and tfmot's schedule deserializer, by the bare 'Name'.
  """
  cls = keras.utils.register_keras_serializable(package='tf_admm')(cls)
  keras.utils.get_custom_objects()[cls.__name__] = cls
  return cls
