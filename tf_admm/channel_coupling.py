"""Channel pruning of tied producers as one: the projection onto a channel
group (`tf_admm.channel_graph.ChannelGroup`).

Producers writing to one residual stream (through Adds) have tied output
channels: channel c goes from all of them or from none, else surgery can
cut it from none. `KeepChannels` projects each weight alone; for a group of
several producers under it, `CoupledChannels` chooses the kept channels
together, by their squared norms summed over the group (the Euclidean
projection onto the tied constraint), keeping as many as the most any
member's target asks, and never a pinned channel. The ADMM callback passes
the choice to each member's projection.
"""

import dataclasses
import math
from typing import Dict, List, Tuple

import numpy as np

from tf_admm import channel_graph
from tf_admm import projections


@dataclasses.dataclass(frozen=True)
class CoupledChannels:
  """One group's producers under ADMM: (producer path, PrunableWeight,
  ADMM regularizer) each, all with `KeepChannels` constraints."""
  group: channel_graph.ChannelGroup
  members: Tuple[tuple, ...]

  def choose(self, values: Dict[str, np.ndarray],
             progress: float) -> Dict[str, np.ndarray]:
    """{weight path: kept output channels (bool)} for the members' weights
    `values` ({weight path: array}: W, or W + U for a Z-step) at schedule
    `progress`, within each member's mask."""
    scores, count = {}, 0
    for producer, weight, regularizer in self.members:
      constraint = regularizer.constraint_at(progress)
      allowed = regularizer.mask.numpy() > 0
      scores[producer] = np.maximum(projections.channel_scores(
          values[weight.path], constraint.axis, allowed), 0.0)
      asked = constraint.channels(weight.shape) / weight.shape[
          constraint.axis]
      count = max(count, math.ceil(asked * self.group.width - 1e-9))
    kept = self.group.keep(scores, count)
    return {weight.path: kept[self.group.index[producer]]
            for producer, weight, _ in self.members}


def _channel_weights(pairs) -> Dict[str, tuple]:
  """{layer path: (PrunableWeight, regularizer)} of the weights under a
  constraint that removes channels."""
  found = {}
  for weight, regularizer in pairs:
    if regularizer.constraint.removes_channels:
      found[weight.layer_path] = (weight, regularizer)
  return found


def coupled_channels(graph: channel_graph.ChannelGraph,
                     pairs) -> List[CoupledChannels]:
  """The groups of `graph` with several producers among `pairs` ([(
  PrunableWeight, ADMM regularizer)]) under channel constraints."""
  under = _channel_weights(pairs)
  coupled = []
  for group in graph.groups:
    members = tuple((path,) + under[path] for path in group.producers
                    if path in under)
    if len(members) > 1:
      coupled.append(CoupledChannels(group, members))
  return coupled


def choose_channels(coupled, values_of, progress: float) -> dict:
  """{weight path: output channels kept} for the weights of every group in
  `coupled`, chosen from `values_of(weight, regularizer)` (W, or W + U)."""
  chosen = {}
  for group in coupled:
    chosen.update(group.choose(
        {w.path: values_of(w, r) for _, w, r in group.members}, progress))
  return chosen


def uncuttable(graph: channel_graph.ChannelGraph, layer_path: str):
  """Why the output channels of the layer at `layer_path` cannot be cut
  (a sentence), or None where they can."""
  call = next((c for c in graph.calls if c.path == layer_path), None)
  if call is None or call.kind != channel_graph.PRODUCE:
    return ('the channel graph keeps its channels whole (a layer it does not '
            'know, shared, or in a form it cannot cut)')
  group = graph.group_of(layer_path)
  if group.pinned[group.index[layer_path]].all():
    return ('every one of its channels reaches a model output or a layer '
            'that reads all channels (such as Softmax or a recurrent layer)')
  return None
