"""Allocations: functions that, given a pretrained dense model, say how
much of each layer a progressive run keeps at its final rate ({layer name:
keep ratio}), the shape its stages rescale (`ProgressiveRun`'s
`allocate`)."""

from typing import Mapping, Sequence

from tf_admm import macs
from tf_admm import targets
from tf_admm import weights as weights_lib


def layer_sizes(model):
  """{layer name: entries in its prunable weights}: what per-layer targets
  and keep-ratio profiles apply to."""
  return weights_lib.sum_by_layer(model, lambda weight: weight.size)


def profile_allocation(profile: Mapping[str, float], rate: float):
  """An `allocate` for ProgressiveRun: `profile` scaled to `rate`."""

  def allocate(dense_model):
    return targets.rescale(profile, layer_sizes(dense_model), rate)

  return allocate


def macs_allocation(profile: Mapping[str, float], factor: float):
  """An `allocate` for ProgressiveRun pruning channels: `profile` (relative
  channel keep ratios) scaled to `factor` times fewer MACs."""

  def allocate(dense_model):
    return macs.keep_ratios_for_macs(dense_model, profile, factor)

  return allocate


def norm_allocation(layer_names: Sequence[str], factor: float):
  """An `allocate` for ProgressiveRun pruning channels: one threshold over
  the channels' relative norms (`tf_admm.macs.keep_ratios_by_norm`) at
  `factor` times fewer MACs."""

  def allocate(dense_model):
    return macs.keep_ratios_by_norm(dense_model, layer_names, factor)

  return allocate


def global_allocation(rate: float):
  """An `allocate` for ProgressiveRun: one global target at `rate`
  (`tf_admm.keep_counts`: one threshold over the weights' LAMP scores)."""

  def allocate(dense_model):
    counts = targets.keep_counts(dense_model, targets.CompressionRate(rate))
    kept = weights_lib.sum_by_layer(dense_model, lambda w: counts[w.path])
    sizes = layer_sizes(dense_model)
    return {name: count / sizes[name] for name, count in kept.items()}

  return allocate
