"""TFLite export of pruned Keras models (Keras 3 or tf_keras), with size and
accuracy checks."""

from tflite_export.converter import Quantization
from tflite_export.converter import convert
from tflite_export.evaluate import accuracy
from tflite_export.evaluate import latency_seconds
from tflite_export.evaluate import predict
from tflite_export.micro import export_micro
from tflite_export.report import export_variants
from tflite_export.report import format_table
from tflite_export.report import sizes
