"""Which Keras tf_admm uses, and every private access to Keras or tfmot.

tf_admm works on models of either Keras, and decides per model:
  - Keras 2 (the `tf_keras` package, named `keras` here), the only Keras
    tensorflow-model-optimization 0.8 accepts: masked retraining uses tfmot's
    pruning wrappers;
  - Keras 3 (`import keras`, named `keras3` here), on the TensorFlow
    backend: masked retraining holds masks by variable constraints alone,
    without tfmot.
Importing tf_admm leaves `tf.keras` alone: tfmot, which switches `tf.keras`
to Keras 2 when imported (it sets TF_USE_LEGACY_KERAS), is imported only by
`tfmot()`, which only the Keras 2 path calls.

Every use of a private name of Keras or tfmot lives here, so a new Keras or
tfmot release has one file to check.
"""

import functools
import json
import os
from typing import Optional
import zipfile

import h5py
import keras as keras3
# Keras 3's functional model class, which its public API does not export.
from keras.src.models.functional import Functional as Keras3Functional
import tensorflow as tf
import tf_keras as keras

# Trackable base of objects that own variables but are not layers (the ADMM
# regularizer): their variables become checkpoint dependencies of the layer.
Trackable = tf.__internal__.tracking.AutoTrackable


def is_model(obj) -> bool:
  """Whether `obj` is a model of either Keras."""
  return isinstance(obj, (keras.Model, keras3.Model))


def built_on(cls, package: str, class_name: Optional[str] = None) -> bool:
  """Whether class `cls` derives from a class defined in `package` (named
  `class_name`, if given): a check that leaves `package` unimported."""
  return any(base.__module__.split('.')[0] == package and
             class_name in (None, base.__name__) for base in cls.__mro__)


def _has_class(obj, package: str, class_name: str) -> bool:
  """Whether `obj` is an instance of a class `class_name` of `package`."""
  return built_on(type(obj), package, class_name)


def is_keras3_model(obj) -> bool:
  """Whether `obj` is a Keras 3 (`import keras`) model."""
  return isinstance(obj, keras3.Model)


def is_keras3(obj) -> bool:
  """Whether `obj` (a model, layer or variable) belongs to Keras 3."""
  return isinstance(obj, (keras3.layers.Layer, keras3.Variable))


def is_variable(obj) -> bool:
  """Whether `obj` is a variable (of TensorFlow or Keras 3), not a value."""
  return isinstance(obj, (tf.Variable, keras3.Variable))


def keras_of(obj):
  """The Keras module `obj` (a model, layer or variable) belongs to."""
  return keras3 if is_keras3(obj) else keras


KERAS_VERSIONS = (2, 3)


def keras_module(version: int):
  """The Keras module of major version `version`: 2 (tf_keras) or 3."""
  if version not in KERAS_VERSIONS:
    raise ValueError(f'Keras version must be 2 (tf_keras) or 3 (keras), got '
                     f'{version!r}.')
  return keras3 if version == 3 else keras


def saved_by_keras3(path) -> bool:
  """Whether `path` is a `.keras` archive or an `.h5` file Keras 3 wrote
  (each names the Keras version that wrote it; tf_keras writes 2.x there,
  and SavedModel folders are Keras 2's)."""
  if h5py.is_hdf5(path):
    with h5py.File(path, 'r') as f:
      version = f.attrs.get('keras_version', '')
    return str(version.decode() if isinstance(version, bytes)
               else version).startswith('3.')
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    try:
      metadata = json.loads(archive.read('metadata.json'))
    except (KeyError, ValueError):
      return False
  return str(metadata.get('keras_version', '')).startswith('3.')


def replica_values(variable) -> list:
  """The value of each replica's copy of `variable` (a variable of either
  Keras, mirrored or not), as numpy arrays."""
  # A Keras 3 variable holds its TensorFlow (here: distributed) variable.
  inner = getattr(variable, '_value', variable) if is_keras3(variable) else (
      variable)
  return [copy.numpy() for copy in getattr(inner, 'values', [inner])]


def in_symbolic_build() -> bool:
  """Whether Keras 3 is tracing shapes only (`compute_output_spec`, as
  `fit` does first under a tf.distribute strategy), not computing values."""
  # pylint: disable-next=g-import-not-at-top
  from keras.src.backend.common import symbolic_scope
  return symbolic_scope.in_symbolic_scope()


def load_model(keras_module_, path: str, safe_mode: bool):
  """`load_model(path)` of `keras_module_`, uncompiled. On Keras 2 the
  safe mode covers `.h5` files and SavedModels too, which tf_keras's
  `load_model` leaves out of it (only its private scope reaches them)."""
  if keras_module_ is keras3:
    return keras3.saving.load_model(path, compile=False, safe_mode=safe_mode)
  # pylint: disable-next=g-import-not-at-top
  from tf_keras.src.saving import serialization_lib
  with serialization_lib.SafeModeScope(safe_mode):
    return keras.models.load_model(path, compile=False, safe_mode=safe_mode)


def saved_model_configs(path: str) -> list:
  """[(node path, its config as JSON)] of every Keras object of the tf_keras
  SavedModel folder `path`, from its keras_metadata.pb."""
  # pylint: disable-next=g-import-not-at-top
  from tf_keras.protobuf import saved_metadata_pb2
  metadata_path = os.path.join(path, 'keras_metadata.pb')
  if not os.path.exists(metadata_path):
    raise ValueError(f'{path} is not a SavedModel tf_keras wrote (it has no '
                     'keras_metadata.pb): save the model as .keras.')
  metadata = saved_metadata_pb2.SavedMetadata()
  with open(metadata_path, 'rb') as f:
    metadata.ParseFromString(f.read())
  return [(node.node_path, json.loads(node.metadata))
          for node in metadata.nodes]


def variable_path(variable) -> str:
  """'layer/name' of a weight: a Keras 3 variable's path, a TensorFlow
  variable's name without its ':0'."""
  if isinstance(variable, keras3.Variable):
    return variable.path
  return variable.name.split(':')[0]


def layer_weights(layer) -> list:
  """The variables of `layer` without the state of its regularizers: on
  Keras 3 an ADMM regularizer or HeldMask is a layer inside the layer it
  regularizes, whose variables `layer.weights` lists too."""
  if not is_keras3(layer):
    return list(layer.weights)
  state = {id(variable)
           for inner in layer._flatten_layers(include_self=False)  # pylint: disable=protected-access
           if isinstance(inner, keras3.regularizers.Regularizer)
           for variable in inner.weights}
  return [v for v in layer.weights if id(v) not in state]


def optimizer_steps(model) -> int:
  """The optimizer steps `model` has taken."""
  return int(model.optimizer.iterations.numpy())


def gradient_accumulation_steps(model) -> int:
  """Batches per optimizer step (Keras 3 optimizers can accumulate)."""
  return int(getattr(model.optimizer, 'gradient_accumulation_steps', None)
             or 1)


def check_backend(model) -> None:
  """Raises unless a Keras 3 `model` runs on the TensorFlow backend."""
  if is_keras3_model(model) and keras3.backend.backend() != 'tensorflow':
    raise ValueError(
        f'tf_admm runs Keras 3 models on the TensorFlow backend; this program '
        f'uses {keras3.backend.backend()!r}. Set KERAS_BACKEND=tensorflow '
        'before importing keras.')


def is_pruning_wrapper(layer) -> bool:
  """Whether `layer` is a tfmot pruning wrapper (PruneLowMagnitude)."""
  return _has_class(layer, 'tensorflow_model_optimization', 'PruneLowMagnitude')


def is_cloneable(model) -> bool:
  """Whether `model` is Sequential or functional (clone_model can copy it)."""
  if is_keras3_model(model):
    return isinstance(model, (keras3.Sequential, Keras3Functional))
  return isinstance(model, keras.Sequential) or model._is_graph_network  # pylint: disable=protected-access


def set_constraint(variable, constraint) -> None:
  """Replaces a built variable's constraint (Keras offers no setter).

  Under a mixed-precision policy a layer's weight is an AutoCastVariable,
  whose optimizer step reads the constraint of the variable inside it; under
  a tf.distribute strategy, a distributed variable whose `constraint` is its
  first copy's: every copy gets it.
  """
  if is_keras3(variable):  # Keras 3 has a setter
    variable.constraint = constraint
    return
  variable = getattr(variable, '_variable', variable)  # pylint: disable=protected-access
  copies = (variable.values
            if isinstance(variable, tf.distribute.DistributedValues)
            else (variable,))
  for copy in copies:
    copy._constraint = constraint  # pylint: disable=protected-access


def steps_per_execution(model) -> int:
  """Training steps per call of the compiled train function."""
  if is_keras3_model(model):
    return int(model.steps_per_execution)
  return int(model._steps_per_execution.numpy())  # pylint: disable=protected-access


class BatchHookCallback(keras.callbacks.Callback):
  """A callback whose per-batch hooks run only when `needs_batch_hooks()`.

  Keras 2 calls a callback's batch hooks only if it says it implements
  them; a hook costs a host round trip every step. The callback also takes
  logs as tensors, so Keras never pulls batch logs to the host on its
  account. Keras 3 calls every callback's hooks, with logs as floats; it
  takes this Keras 2 callback as it is (it needs only the methods).
  """

  def __init__(self):
    super().__init__()
    self._supports_tf_logs = True  # pylint: disable=protected-access

  def needs_batch_hooks(self) -> bool:
    raise NotImplementedError

  def _implements_train_batch_hooks(self):
    return self.needs_batch_hooks()


@functools.lru_cache(maxsize=None)
def tfmot():
  """tensorflow_model_optimization, imported on first use."""
  import tensorflow_model_optimization  # pylint: disable=g-import-not-at-top
  return tensorflow_model_optimization


def prune_low_magnitude_class():
  """tfmot's wrapper class, which its public API exposes only as a factory."""
  tfmot()
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # pylint: disable=g-import-not-at-top
  return pruning_wrapper.PruneLowMagnitude


# The names tfmot's PruneLowMagnitude.build gives the variables it adds for
# each pruned weight, in this order.
PRUNING_VARIABLE_NAMES = ('mask', 'threshold')
# The name of the step counter it adds. The counter starts at -1; each
# training step adds 1 and then asserts it is at least 1, which fails unless
# tfmot's UpdatePruningStep callback set it to 0 when training began.
PRUNING_STEP_NAME = 'pruning_step'


def wrapper_masks(wrapper):
  """[(weight variable, mask variable)] of a tfmot pruning wrapper."""
  return [(weight, mask) for weight, mask, _ in wrapper.pruning_vars]


def functional_calls(model) -> list:
  """[(layer, [input tensors], [output tensors])] of every layer call in the
  graph of a built Sequential or functional `model`, in an order where each
  call comes after the calls that make its inputs (input layers included)."""
  graph = getattr(model, '_functional', None) or model  # Keras 3 Sequential
  nodes_by_depth = graph._nodes_by_depth  # pylint: disable=protected-access
  calls = []
  for depth in sorted(nodes_by_depth, reverse=True):
    for node in nodes_by_depth[depth]:
      if is_keras3_model(model):
        layer, inputs, outputs = (node.operation, node.input_tensors,
                                  node.output_tensors)
      else:
        layer, inputs, outputs = node.layer, node.keras_inputs, node.outputs
      calls.append((layer, tf.nest.flatten(inputs), tf.nest.flatten(outputs)))
  return calls


def unwrapped(layer):
  """The layer inside a tfmot pruning wrapper, or `layer`."""
  return layer.layer if is_pruning_wrapper(layer) else layer
