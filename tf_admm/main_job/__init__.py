"""The main job: progressive ADMM pruning (and quantization) of a model on
an image dataset, from pretraining to TFLite and a report, driven by absl
flags (`prune_mnist`), with its presets (`presets`) and how its flags
become a run (`run_setup`). Run it as `examples/prune_mnist.py` or the
console script `tf-admm-prune`."""
