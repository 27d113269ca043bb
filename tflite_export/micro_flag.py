"""The --micro flag, defined once for every script that takes it (absl
flags are global: two definitions in one process collide)."""

from absl import flags

MICRO = flags.DEFINE_bool(
    'micro', False, 'Also make the TensorFlow Lite for Microcontrollers file '
    '(micro.tflite: full int8, kernels LUT-compressed where that stores them '
    'smaller; tflite_export.micro) and score it in the TFLM interpreter. The '
    'main job: on in its quantized presets; the report\'s "micro" gives its '
    'flash and arena bytes. compare_collaborative.py: tfmot\'s model too, '
    'against the run\'s (which must have been made with --micro).')
