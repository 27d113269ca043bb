"""Keras registration so saved models load after `import tf_admm`."""

from tf_admm.keras_compat import keras


def register(cls):
  """Registers `cls` under its package name and its bare class name.

  Keras's own format looks objects up as 'tf_admm>Name'; the legacy H5 and
  SavedModel formats, and tfmot's schedule deserializer, by the bare 'Name'.
  """
  cls = keras.utils.register_keras_serializable(package='tf_admm')(cls)
  keras.utils.get_custom_objects()[cls.__name__] = cls
  return cls
