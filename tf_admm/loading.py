"""Loading a saved Keras model of either Keras without running code from
the file, unless the caller opts in.

Keras's `safe_mode` does not cover every format: tf_keras applies it to
`.keras` archives only, so a `Lambda` in an `.h5` file or a SavedModel runs
its Python bytecode while the model is rebuilt, and tf_keras imports any
module a `.keras` archive's config names. So before anything is
deserialized, the architecture is read as plain JSON (the archive's
config.json, the `.h5` file's `model_config`, the SavedModel's
keras_metadata.pb) and refused if it holds code (a `Lambda`, a function as
bytecode), names a module outside Keras and tf_admm, or names a layer class
that is neither Keras's nor registered; then the model loads with Keras's
own safe mode on as well.

A SavedModel's TensorFlow graph runs TensorFlow ops, not Python, but those
ops can read and write files: TensorFlow's security guidance treats every
model as a program. Load models from sources you trust.
"""

import json
import os
import shutil
import tempfile
import zipfile

from absl import logging
import h5py

from tf_admm import backends
from tf_admm import keras_compat

# Packages whose modules a saved config may name: the Kerases, tf_admm, and
# tfmot (whose pruning wrappers Keras 2 files hold).
_SAFE_PACKAGES = ('keras', 'tf_keras', 'tf_admm',
                  'tensorflow_model_optimization', 'builtins')
# Model classes, which no `layers` module exports.
_MODEL_CLASSES = ('Functional', 'Sequential', 'Model')
# tf_keras's layers wrapping a TensorFlow function called by name (in
# functional models that call TensorFlow ops): only the pure math of these
# namespaces may be named (tf.io, tf.compat, ... could touch files).
_OP_LAYERS = ('TFOpLambda', 'SlicingOpLambda', 'InstanceMethod',
              'InstanceProperty', 'ClassMethod')
_SAFE_OP_PREFIXES = ('__operators__.', 'math.', 'nn.', 'linalg.', 'image.',
                     'signal.', 'bitwise.')
# TensorFlow's top-level names that only compute on tensors (tf.print,
# tf.load_op_library, ... are not among them).
_SAFE_TOP_LEVEL_OPS = frozenset((
    'abs', 'add', 'argmax', 'argmin', 'broadcast_to', 'cast', 'clip_by_value',
    'concat', 'convert_to_tensor', 'cumsum', 'divide', 'einsum', 'equal',
    'exp', 'expand_dims', 'fill', 'gather', 'gather_nd', 'identity', 'linspace',
    'matmul', 'maximum', 'minimum', 'multiply', 'one_hot', 'ones', 'ones_like',
    'pad', 'pow', 'range', 'reduce_max', 'reduce_mean', 'reduce_min',
    'reduce_prod', 'reduce_sum', 'repeat', 'reshape', 'reverse', 'round',
    'shape', 'sigmoid', 'sign', 'slice', 'split', 'sqrt', 'square', 'squeeze',
    'stack', 'strided_slice', 'subtract', 'tanh', 'tensordot', 'tile',
    'transpose', 'truediv', 'unstack', 'where', 'zeros', 'zeros_like'))
_UNSAFE_HINT = ('If you trust the file, load it with safe_mode=False '
                '(--unsafe_load), which runs whatever code it holds.')


class UnsafeModelFile(ValueError):
  """A saved model holds code, or names code outside Keras and tf_admm."""


def load_model(path: str, keras=None, safe_mode: bool = True):
  """The model saved at `path` (`.keras`, `.h5`, or a tf_keras SavedModel
  folder), uncompiled; `keras` (default: the Keras that wrote it) loads it.

  With `safe_mode` (the default) a file holding code is refused before
  anything of it is deserialized (`UnsafeModelFile`, naming the layer).
  `safe_mode=False` loads it anyway and logs a warning: only for files from
  a trusted source, as the file's code runs.
  """
  if not os.path.exists(path):
    raise ValueError(f'No saved model at {path!r}.')
  if keras is None:
    keras = (keras_compat.keras3 if keras_compat.saved_by_keras3(path)
             else keras_compat.keras)
  # Registers the classes a file with held masks or pruning wrappers names.
  (backends.KERAS3 if keras is keras_compat.keras3
   else backends.KERAS2).retraining()
  if not safe_mode:
    logging.warning('Loading %s with safe_mode=False: any code it holds '
                    'runs now.', path)
    return keras_compat.load_model(keras, path, safe_mode=False)
  # A private copy, so that the file checked is the file loaded.
  with tempfile.TemporaryDirectory() as folder:
    private = os.path.join(folder, os.path.basename(os.path.normpath(path)))
    if os.path.isdir(path):
      shutil.copytree(path, private)
    else:
      shutil.copyfile(path, private)
    try:
      check_file(private, keras)
    except ValueError as error:  # named by the user's path, not the copy's
      raise type(error)(str(error).replace(private, path)) from None
    return keras_compat.load_model(keras, private, safe_mode=True)


def check_file(path: str, keras) -> None:
  """Raises UnsafeModelFile if the model saved at `path` holds code (see
  `check_config`); reads it as JSON only."""
  for where, config in saved_configs(path):
    check_config(config, keras, f'{path} ({where})')


def saved_configs(path: str) -> list:
  """[(where, architecture JSON)] of the saved model at `path`, read
  without deserializing anything."""
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, 'config.json')):  # Keras 3 folder
      with open(os.path.join(path, 'config.json')) as f:
        return [('config.json', json.load(f))]
    return keras_compat.saved_model_configs(path)
  # The format as Keras picks it: by the extension, then by the content.
  if path.endswith('.keras'):
    if not zipfile.is_zipfile(path):
      raise ValueError(f'{path} is not a saved Keras model (a .keras file '
                       'is a zip archive; this one is cut short or another '
                       'file).')
    with zipfile.ZipFile(path) as archive:
      try:
        return [('config.json', json.loads(archive.read('config.json')))]
      except KeyError:
        raise ValueError(f'{path} is a zip archive without config.json, not '
                         'a saved Keras model.') from None
  if h5py.is_hdf5(path):
    with h5py.File(path, 'r') as f:
      config = f.attrs.get('model_config')
    if config is None:
      raise ValueError(f'{path} holds weights only (no model_config); load '
                       'them into a model you build with model.load_weights.')
    return [('model_config', json.loads(config))]
  raise ValueError(f'{path} is not a saved Keras model (.keras, .h5 or a '
                   'SavedModel folder).')


def check_config(config, keras, where: str) -> None:
  """Raises UnsafeModelFile if the architecture `config` (JSON) holds code,
  names a module outside Keras and tf_admm, or a layer class `keras` does
  not know."""
  for node, layer_name in _objects(config, None):
    class_name = node.get('class_name')
    inner = node.get('config') if isinstance(node.get('config'), dict) else {}
    layer = f'layer {layer_name!r}' if layer_name else 'an object'
    if class_name in ('Lambda', '__lambda__') or any(
        key.endswith('_type') and value == 'lambda'
        for key, value in inner.items()):
      raise UnsafeModelFile(
          f'{where}: {layer} holds Python code ({class_name}), which '
          f'would run on loading. {_UNSAFE_HINT}')
    module = node.get('module')
    if (isinstance(module, str) and module.split('.')[0] not in _SAFE_PACKAGES
        and not _registered(keras, node)):
      raise UnsafeModelFile(
          f'{where}: {layer} names the module {module!r}, outside Keras and '
          f'tf_admm, which loading would import. {_UNSAFE_HINT}')
    if class_name in _OP_LAYERS and not _safe_op(inner.get('function')):
      raise UnsafeModelFile(
          f'{where}: {layer} calls tf.{inner.get("function")}, outside '
          f'TensorFlow\'s math ops. {_UNSAFE_HINT}')
    if 'layers' in inner and isinstance(inner['layers'], list):
      for entry in inner['layers']:
        if isinstance(entry, dict) and not _known_layer(keras, entry):
          name = (entry.get('config') or {}).get('name')
          raise UnsafeModelFile(
              f'{where}: layer {name!r} is of class '
              f'{entry.get("registered_name") or entry.get("class_name")!r}, '
              'which is neither a Keras layer nor registered: import the '
              'module defining it (registered with '
              'register_keras_serializable) first.')


def _objects(value, layer_name):
  """(dict with a class_name, the name of the layer it is or is in) for
  every such dict in the JSON `value`."""
  if isinstance(value, list):
    for item in value:
      yield from _objects(item, layer_name)
  elif isinstance(value, dict):
    if 'class_name' in value:
      inner = value.get('config')
      if isinstance(inner, dict) and isinstance(inner.get('name'), str):
        layer_name = inner['name']
      yield value, layer_name
    for key, item in value.items():
      if key != 'compile_config':  # loaded uncompiled: never deserialized
        yield from _objects(item, layer_name)


def _safe_op(function) -> bool:
  return isinstance(function, str) and (
      function in _SAFE_TOP_LEVEL_OPS or function.startswith(_SAFE_OP_PREFIXES))


def _known_layer(keras, entry: dict) -> bool:
  class_name = entry.get('class_name')
  if class_name in _MODEL_CLASSES or class_name in _OP_LAYERS:
    return True
  if isinstance(class_name, str) and isinstance(
      getattr(keras.layers, class_name, None), type):
    return True
  return _registered(keras, entry)


def _registered(keras, entry: dict) -> bool:
  """Whether the object `entry` names is registered with `keras` (by the
  user's own import, which ran their code already)."""
  registered = entry.get('registered_name') or entry.get('class_name')
  return isinstance(registered, str) and (
      keras.saving.get_registered_object(registered) is not None)
