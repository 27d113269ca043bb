"""Loading saved models without running code from them (tf_admm.loading),
on both Kerases and every format they save."""

import json
import os
import re
import sys
import zipfile

import numpy as np
import pytest

import tf_admm
from tf_admm import loading
from tf_admm.keras_compat import keras
from tf_admm.keras_compat import keras3
from tests.conftest import small_model

# (Keras, format) pairs whose files can hold a Lambda.
FORMATS = [(keras, '.h5'), (keras, '/'), (keras, '.keras'),
           (keras3, '.keras'), (keras3, '.h5')]


def _marker_lambda(any_keras, marker):
  """A Lambda layer whose Python code writes `marker` when it runs: a
  stand-in for a hostile file's payload."""
  code = f'lambda x: (open({str(marker)!r}, "w").close(), x)[1]'
  return any_keras.layers.Lambda(eval(code), name='payload')  # pylint: disable=eval-used


def _save(model, path):
  """Saves `model` at `path`, a SavedModel folder where it ends in '/'."""
  if path.endswith('/'):
    model.save(path[:-1], save_format='tf')
    return path[:-1]
  model.save(path)
  return path


@pytest.mark.parametrize('any_keras, extension', FORMATS,
                         ids=[f'{k.__name__}{e}' for k, e in FORMATS])
def test_a_lambda_is_refused_by_name_and_its_code_never_runs(
    tmp_path, any_keras, extension):
  marker = tmp_path / 'marker'
  inputs = any_keras.Input((4,))
  inner = any_keras.Sequential([any_keras.Input((4,)),
                                _marker_lambda(any_keras, marker)],
                               name='inner')
  model = any_keras.Model(inputs, any_keras.layers.Dense(2)(inner(inputs)))
  path = _save(model, str(tmp_path / f'model{extension}'))
  marker.unlink()  # building the model ran the lambda once
  with pytest.raises(loading.UnsafeModelFile, match=re.escape(path) +
                     r".*layer 'payload' holds Python code"):
    tf_admm.load_model(path)
  assert not marker.exists()
  # The same file with the user's consent: the code runs (so the refusal
  # above is what kept it from running).
  tf_admm.load_model(path, safe_mode=False)
  assert marker.exists()


def test_a_module_named_by_an_archive_is_never_imported(tmp_path,
                                                        monkeypatch):
  marker = tmp_path / 'imported'
  (tmp_path / 'hostile_module.py').write_text(
      f'open({str(marker)!r}, "w").close()\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  path = tmp_path / 'model.keras'
  small_model().save(path)
  with zipfile.ZipFile(path) as archive:
    files = {name: archive.read(name) for name in archive.namelist()}
  config = json.loads(files['config.json'])
  config['module'] = 'hostile_module'
  files['config.json'] = json.dumps(config).encode()
  with zipfile.ZipFile(path, 'w') as archive:
    for name, content in files.items():
      archive.writestr(name, content)
  with pytest.raises(loading.UnsafeModelFile,
                     match="names the module 'hostile_module'"):
    tf_admm.load_model(str(path))
  assert not marker.exists() and 'hostile_module' not in sys.modules


def test_an_unregistered_layer_class_is_refused_by_name(tmp_path):
  class Doubling(keras.layers.Layer):
    def call(self, x):
      return 2 * x

  model = keras.Sequential([keras.Input((4,)), Doubling(name='twice'),
                            keras.layers.Dense(2)])
  model.save(tmp_path / 'model.h5')
  with pytest.raises(loading.UnsafeModelFile,
                     match="layer 'twice' is of class 'Doubling', which is "
                     'neither a Keras layer nor registered'):
    tf_admm.load_model(str(tmp_path / 'model.h5'))


@pytest.mark.parametrize('function, safe', [
    ('nn.relu', True), ('__operators__.add', True), ('reshape', True),
    ('io.write_file', False), ('compat.v1.io.gfile.remove', False),
    ('py_function', False), ('load_op_library', False),
    ('load_library', False), ('print', False)])
def test_only_tensorflow_math_may_be_called_by_name(function, safe):
  config = {'class_name': 'Functional', 'config': {'name': 'm', 'layers': [
      {'class_name': 'TFOpLambda',
       'config': {'name': 'op', 'function': function}}]}}
  if safe:
    loading.check_config(config, keras, 'm.h5')
  else:
    with pytest.raises(loading.UnsafeModelFile,
                       match=f"layer 'op' calls tf.{function}"):
      loading.check_config(config, keras, 'm.h5')


@pytest.mark.parametrize('any_keras', [keras, keras3])
@pytest.mark.parametrize('extension', ['.keras', '.h5'])
def test_plain_and_tf_admm_models_load_as_saved(tmp_path, any_keras,
                                                extension):
  model = tf_admm.attach_admm(small_model(keras=any_keras),
                              tf_admm.KeepRatio(0.5))
  path = str(tmp_path / f'model{extension}')
  model.save(path)
  loaded = tf_admm.load_model(path)
  for a, b in zip(loaded.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('content, message', [
    (b'just text', 'is not a saved Keras model'),
    (None, 'No saved model at'),
])
def test_what_is_not_a_model_is_named(tmp_path, content, message):
  path = tmp_path / 'model.keras'
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(ValueError, match=message):
    tf_admm.load_model(str(path))
  assert os.listdir(tmp_path) == ([] if content is None else ['model.keras'])


def test_a_registered_layer_of_the_users_own_package_loads(tmp_path):
  @keras3.saving.register_keras_serializable(package='users_package')
  class Doubling(keras3.layers.Layer):
    def call(self, x):
      return 2 * x

  model = keras3.Sequential([keras3.Input((4,)), Doubling(name='twice'),
                             keras3.layers.Dense(2)])
  model.save(tmp_path / 'model.keras')
  loaded = tf_admm.load_model(str(tmp_path / 'model.keras'))
  assert type(loaded.get_layer('twice')).__name__ == 'Doubling'
