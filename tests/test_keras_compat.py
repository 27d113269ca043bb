"""Importing tf_admm leaves the user's Keras alone."""

import os
import subprocess
import sys


def _run(code):
  # A fresh program: this test process imported tfmot, which set the switch.
  env = {k: v for k, v in os.environ.items() if k != 'TF_USE_LEGACY_KERAS'}
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, check=True, timeout=300, env=env)
  return result.stdout.split()


def test_importing_tf_admm_neither_imports_tfmot_nor_switches_keras():
  printed = _run(
      'import os, sys\n'
      'import keras\n'
      'import tf_admm\n'
      'import tensorflow as tf\n'
      'print(os.environ.get("TF_USE_LEGACY_KERAS"))\n'
      'print("tensorflow_model_optimization" in sys.modules)\n'
      'print(keras.__version__.split(".")[0], '
      'tf.keras.__version__.split(".")[0])\n'
      'tf_admm.FixedMask  # the first use of a tfmot name imports tfmot\n'
      'print("tensorflow_model_optimization" in sys.modules)\n')
  assert printed == ['None', 'False', '3', '3', 'True']
