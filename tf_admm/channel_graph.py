"""The channel graph of a model: its layer calls, and which channels are
tied so that they can only be pruned together.

Built once per model, of either Keras: Sequential or functional, with
nested Sequential and functional models flattened into one graph (layers
named by their path, 'block/conv'). Each layer call is a `Call`; its layer's
handler (`tf_admm.channel_handlers`) says how its channels relate.

Every channel a PRODUCE layer makes is an element; elements that must be
pruned together are joined: channel c of each input of an Add (so every
producer writing to a residual stream), through channel-wise layers,
concatenation slices and flattening. A `ChannelGroup` is a set of producers
whose channels are so joined, and each of its `width` channels lists the
producer channels that are one. A channel is pinned (never cut) where it
reaches a model output, an OPAQUE layer (one that reads every channel, such
as Softmax or an LSTM) or a producer whose activation mixes its outputs.

Surgery (`tf_admm.surgery`), MAC counts (`tf_admm.macs`), the dead-unit cut
(`tf_admm.dead_units`) and coupled channel pruning (`KeepChannels` in
`tf_admm.callback`) all read this graph.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from tf_admm import channel_handlers as handlers_lib
from tf_admm import keras_compat
from tf_admm.channel_handlers import CHANNELWISE
from tf_admm.channel_handlers import CONCATENATE
from tf_admm.channel_handlers import FLATTEN
from tf_admm.channel_handlers import MERGE
from tf_admm.channel_handlers import OPAQUE
from tf_admm.channel_handlers import PRODUCE
from tf_admm.keras_compat import is_model


@dataclasses.dataclass
class Call:
  """One call of a layer: its tensors are keys into `ChannelGraph.shapes`."""
  path: str  # 'block/conv'
  layer: object  # a pruning wrapper's inner layer, where it is one
  handler: handlers_lib.Handler
  kind: str  # the handler's kind for this call (OPAQUE where it cannot cut)
  inputs: List[int]
  outputs: List[int]


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
  """Producers whose output channels are tied (see the module)."""
  producers: Tuple[str, ...]  # layer paths, in model order
  # Per producer: the group channel each of its output channels is.
  index: Dict[str, np.ndarray]
  pinned: np.ndarray  # bool per group channel: never cut

  @property
  def width(self) -> int:
    return len(self.pinned)

  def keep(self, scores: Dict[str, np.ndarray], count: int) -> np.ndarray:
    """The `count` group channels (bool) of highest summed score, pinned
    ones first: each producer's `scores` (one per output channel; a
    channel's squared norm, for the Euclidean projection) added up over
    the producer channels each group channel is."""
    total = np.zeros(self.width)
    for path, score in scores.items():
      np.add.at(total, self.index[path], score)
    total[self.pinned] = np.inf
    kept = np.zeros(self.width, bool)
    kept[np.argsort(-total, kind='stable')[:max(count,
                                                int(self.pinned.sum()))]] = True
    return kept


class _Elements:
  """Union-find over channel elements, with pinned roots."""

  def __init__(self):
    self.parent = []
    self.pinned = []

  def new(self, count: Optional[int], pinned: bool = False) -> np.ndarray:
    """`count` new elements (none where the width is unknown)."""
    count = count or 0
    start = len(self.parent)
    self.parent += list(range(start, start + count))
    self.pinned += [pinned] * count
    return np.arange(start, start + count)

  def root(self, element: int) -> int:
    while self.parent[element] != element:
      self.parent[element] = self.parent[self.parent[element]]
      element = self.parent[element]
    return element

  def join(self, a: int, b: int) -> None:
    a, b = self.root(a), self.root(b)
    if a != b:
      self.parent[b] = a
      self.pinned[a] = self.pinned[a] or self.pinned[b]

  def pin(self, elements) -> None:
    for element in elements:
      self.pinned[self.root(int(element))] = True


def _shape(tensor) -> tuple:
  return tuple(None if d is None else int(d) for d in tensor.shape)


class ChannelGraph:
  """The calls of `model`'s layers in order, the shapes of their tensors,
  and the channel groups (see the module)."""

  def __init__(self, model):
    self.model = model
    self.calls: List[Call] = []
    self.shapes: Dict[int, tuple] = {}
    self._elements = _Elements()
    self._channels: Dict[int, np.ndarray] = {}  # tensor key: its elements
    self._made: Dict[str, np.ndarray] = {}  # producer path: its elements
    self._calls_of = {}  # id(layer): its calls in this graph
    self._count_calls(model)
    inputs = [self._new_tensor(t, self._elements.new(_shape(t)[-1], True))
              for t in model.inputs]
    self.inputs = inputs
    self.outputs = self._walk(model, '', inputs)
    for key in self.outputs:
      self._elements.pin(self._channels[key])
    self.maker = {key: call for call in self.calls for key in call.outputs}
    self.readers: Dict[int, List[Call]] = {}
    for call in self.calls:
      for key in call.inputs:
        self.readers.setdefault(key, []).append(call)
    self.groups = self._groups()

  def _new_tensor(self, tensor, elements) -> int:
    self.shapes[id(tensor)] = _shape(tensor)
    self._channels[id(tensor)] = elements
    return id(tensor)

  def _count_calls(self, model) -> None:
    for layer, inputs, _ in keras_compat.functional_calls(model):
      if inputs and is_model(layer):
        self._count_calls(layer)
      elif inputs:
        self._calls_of[id(layer)] = self._calls_of.get(id(layer), 0) + 1

  def _walk(self, model, prefix, input_keys) -> List[int]:
    """Adds the calls of `model` reading `input_keys`; returns the keys of
    its outputs."""
    alias = {id(t): key for t, key in zip(model.inputs, input_keys)}
    for layer, inputs, outputs in keras_compat.functional_calls(model):
      keys = [alias.get(id(t), id(t)) for t in inputs]
      if not keys:  # an input layer: its tensor is one of model.inputs
        continue
      if is_model(layer):
        inner = self._walk(layer, f'{prefix}{layer.name}/', keys)
        alias.update({id(t): key for t, key in zip(outputs, inner)})
        continue
      self._add_call(f'{prefix}{layer.name}', layer, keys, outputs)
    return [alias.get(id(t), id(t)) for t in model.outputs]

  def _add_call(self, path, layer, input_keys, outputs) -> None:
    # Counted in this graph: a layer may also be called in another model
    # (a pruning wrapper's, or the one a clone reused it from).
    shared = self._calls_of[id(layer)] > 1
    layer = keras_compat.unwrapped(layer)
    handler = handlers_lib.handler_of(layer)
    input_shapes = [self.shapes[key] for key in input_keys]
    kind = handler.kind_of(layer, input_shapes)
    if (shared or len(outputs) != 1 or
        any(None in s[1:] for s in input_shapes)):
      # One set of weights for several calls, several outputs, or
      # positions unknown until called: kept whole.
      kind = OPAQUE
    sources = [self._channels[key] for key in input_keys]
    elements = self._elements
    if kind == PRODUCE:
      made = elements.new(_shape(outputs[0])[-1])
      self._made[path] = made
      if handler.mixes_outputs(layer):
        elements.pin(made)
    elif kind == CHANNELWISE:
      made = sources[0]
    elif kind == MERGE:
      for source in sources[1:]:
        for a, b in zip(sources[0], source):
          elements.join(int(a), int(b))
      made = sources[0]
    elif kind == CONCATENATE:
      made = np.concatenate(sources)
    elif kind == FLATTEN:
      made = np.tile(sources[0], int(np.prod(input_shapes[0][1:-1])))
    else:  # OPAQUE
      for source in sources:
        elements.pin(source)
      made = None
    output_keys = [self._new_tensor(
        t, made if made is not None else elements.new(_shape(t)[-1], True))
                   for t in outputs]
    self.calls.append(Call(path, layer, handler, kind, input_keys,
                           output_keys))

  def _groups(self) -> List[ChannelGroup]:
    """The producers' channels, gathered by root into groups."""
    roots = {path: np.array([self._elements.root(int(e)) for e in made])
             for path, made in self._made.items()}
    # Producers sharing any root are one group.
    owners = {}
    for path, path_roots in roots.items():
      for root in path_roots:
        owners.setdefault(int(root), []).append(path)
    group_of = {path: path for path in roots}

    def find(path):
      while group_of[path] != path:
        path = group_of[path]
      return path

    for paths in owners.values():
      for other in paths[1:]:
        group_of[find(other)] = find(paths[0])
    members = {}
    for path in roots:  # model order
      members.setdefault(find(path), []).append(path)
    groups = []
    for paths in members.values():
      order = list(dict.fromkeys(int(r) for p in paths for r in roots[p]))
      position = {root: i for i, root in enumerate(order)}
      groups.append(ChannelGroup(
          producers=tuple(paths),
          index={p: np.array([position[int(r)] for r in roots[p]])
                 for p in paths},
          pinned=np.array([self._elements.pinned[r] for r in order], bool)))
    return groups

  def group_of(self, path: str) -> ChannelGroup:
    """The group of the producer at layer path `path`."""
    for group in self.groups:
      if path in group.index:
        return group
    raise KeyError(f'{path!r} is not a layer that makes channels the graph '
                   'can cut.')

  def call(self, path: str) -> Call:
    for call in self.calls:
      if call.path == path:
        return call
    raise KeyError(path)

  def input_shapes(self, call: Call) -> list:
    return [self.shapes[key] for key in call.inputs]

  def output_shape(self, call: Call) -> tuple:
    return self.shapes[call.outputs[0]]

  def macs(self) -> dict:
    """{'total': MACs, 'layers': {layer path: MACs}} of one example, for the
    layers whose handlers count them."""
    counted = {}
    for call in self.calls:
      count = call.handler.macs(call.layer, self.input_shapes(call),
                                self.output_shape(call))
      if count:
        counted[call.path] = counted.get(call.path, 0) + int(count)
    return {'total': sum(counted.values()), 'layers': counted}

  def shared_layers(self) -> List[str]:
    """Paths of layers called more than once."""
    paths = [call.path for call in self.calls]
    return sorted({p for p in paths if paths.count(p) > 1})
