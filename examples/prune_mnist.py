r"""The main job: progressive ADMM pruning of LeNet on MNIST-like data, from
pretraining to TFLite, with a report (`tf_admm/main_job/` holds it, its
presets and how its flags become a run; installed, it is `tf-admm-prune`):

  python examples/prune_mnist.py --preset=demo   # or paper, fast, ...
  python examples/prune_mnist.py --preset=demo --keras=3   # Keras 3 models

Rerunning the same command resumes an interrupted run. The report lands in
--output_dir (report.json, report.md, PNG plots, .tflite files).
"""

from tf_admm.main_job import prune_mnist

if __name__ == '__main__':
  prune_mnist.run()
