r"""ADMM pruning of LeNet-5 under a tf.distribute strategy, in a process of its
own (logical devices and TF_CONFIG must be set before TensorFlow starts).

  python -m tests.distributed_admm --strategy=mirrored --data=mnist.npz \
      --output=state.npz

Trains LeNet-5 (of --keras) on examples of MNIST (arrays x and y in --data)
under ADMM (a ramp of hard prunes and Z/U steps), then retrains it with its
masks held (tfmot's wrappers on Keras 2, held masks on Keras 3), and writes the ADMM state (masks, Z, U) and the final weights to --output.
Every replica's copy of each variable is checked to be the same first.
`tests/test_distribute.py` runs it.
"""

import json

from absl import app
from absl import flags

import numpy as np
import tensorflow as tf

import tf_admm
from tf_admm import allocations
from tf_admm import models
from tf_admm import progressive
from tf_admm import run_steps
from tf_admm import keras_compat
from tf_admm import trainer

STRATEGY = flags.DEFINE_enum('strategy', 'one_device',
                             ['one_device', 'mirrored', 'multi_worker'],
                             'one_device: the default strategy; mirrored: '
                             'two logical CPUs; multi_worker: TF_CONFIG.')
DATA = flags.DEFINE_string('data', None, 'An .npz of training arrays x, y.',
                           required=True)
OUTPUT = flags.DEFINE_string('output', None, 'Where to write the .npz.',
                             required=True)
ADMM_STEPS = flags.DEFINE_integer('admm_steps', 15, 'ADMM training steps.')
RUN_DIR = flags.DEFINE_string(
    'run_dir', None, 'Then also a tiny progressive run (one stage) there.')
RETRAIN_STEPS = flags.DEFINE_integer('retrain_steps', 8,
                                     'Masked retraining steps.')
KERAS = flags.DEFINE_enum('keras', '2', ['2', '3'], 'Which Keras.')

EXAMPLES_PER_STEP = 64
KEEP = {'conv1': tf_admm.KeepRatio(0.5), 'conv2': tf_admm.KeepRatio(0.2),
        'fc1': tf_admm.KeepRatio(0.05), 'fc2': tf_admm.KeepRatio(0.5)}


def _strategy():
  if STRATEGY.value == 'mirrored':
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  if STRATEGY.value == 'multi_worker':
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def _same_on_every_replica(variable, name):
  """The variable's value, after checking every replica holds it."""
  copies = keras_compat.replica_values(variable)
  for copy in copies[1:]:
    if not np.array_equal(copy, copies[0]):
      raise AssertionError(f'Replicas differ on {name}.')
  return copies[0]


def _progressive_run(strategy, x, y):
  """One stage of `tf_admm.progressive` at 4x, a few steps per phase."""
  cut = len(x) * 3 // 4
  data = progressive.Data(x[:cut], y[:cut], x[cut:], y[cut:], x[cut:],
                          y[cut:])
  settings = progressive.Settings(
      stage_rates=[4.0], pretrain_epochs=1, admm_epochs=1, retrain_epochs=1,
      prune_every_steps=2, lookahead_steps=2)
  run = progressive.ProgressiveRun(
      lambda: models.lenet5(keras=_keras()), data,
      allocations.global_allocation(4.0),
      settings, RUN_DIR.value, strategy=strategy)
  summary = run.run()
  result = {'chief': run.store.is_chief,
            'rate': run_steps.compression_rate(summary['final_model'])}
  if run.store.is_chief:  # as the main job's report: the other worker is gone
    result['accuracy'] = trainer.accuracy(summary['final_model'], x, y)
  print(json.dumps(result))


def _keras():
  return keras_compat.keras_module(int(KERAS.value))


def main(argv):
  del argv
  strategy = _strategy()  # before TensorFlow runs anything
  keras = _keras()

  with np.load(DATA.value) as data:
    x, y = data['x'], data['y']

  def fit(model, steps, callbacks):
    with strategy.scope():  # Keras 3 compiles under the variables' strategy
      model.compile(
          keras.optimizers.Adam(1e-3),
          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    count = steps * EXAMPLES_PER_STEP
    model.fit(x[:count], y[:count], batch_size=EXAMPLES_PER_STEP, epochs=1,
              shuffle=False, verbose=0, callbacks=callbacks)

  with strategy.scope():
    keras.utils.set_random_seed(0)
    admm = tf_admm.attach_admm(models.lenet5(keras=keras), per_layer=KEEP,
                               rho=1e-2)
  # Hard prunes every 4 steps along a ramp twice as long as the fit, and
  # Z/U steps between them: the fit ends mid-ADMM, after a Z/U step.
  fit(admm, ADMM_STEPS.value, [tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
      epochs=2, prune_every_steps=4, lookahead_steps=4,
      update_every_steps=3))])
  state = {}
  for weight, regularizer in tf_admm.admm_weights(admm):
    for part in ('mask', 'z', 'u'):
      state[f'{part}:{weight.path}'] = _same_on_every_replica(
          getattr(regularizer, part), f'{part} of {weight.path}')

  with strategy.scope():
    wrapped = tf_admm.to_pruning_wrappers(admm)
  # tfmot's wrappers need its step callback; Keras 3's held masks none.
  fit(wrapped, RETRAIN_STEPS.value,
      [tf_admm.update_pruning_step()] if keras is keras_compat.keras else [])
  for path, mask in tf_admm.masks_of(wrapped).items():
    state[f'retrained_mask:{path}'] = mask
  with strategy.scope():
    stripped = tf_admm.strip_pruning(wrapped)
  for weight in tf_admm.prunable_weights(stripped):
    state[f'retrained:{weight.path}'] = _same_on_every_replica(
        weight.variable, weight.path)
  state['replicas'] = np.array(strategy.num_replicas_in_sync)
  np.savez(OUTPUT.value, **state)
  if RUN_DIR.value:
    _progressive_run(strategy, x, y)


if __name__ == '__main__':
  app.run(main)
