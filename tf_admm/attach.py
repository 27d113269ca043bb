"""Putting ADMM regularizers on a model's weights and taking them off."""

from typing import Mapping, Optional, Union
import warnings

from absl import logging
import numpy as np

from tf_admm import arguments
from tf_admm import backends
from tf_admm import channel_coupling
from tf_admm import channel_graph
from tf_admm import constraints as constraints_lib
from tf_admm import keras_compat
from tf_admm import targets
from tf_admm import weights as weights_lib
from tf_admm.keras_compat import is_model
from tf_admm.regularizer import admm_regularizer


def clone_with(model, configure):
  """Clones `model`, nested models too, with layer configs edited by
  `configure(layer, config)`.

  The clone has fresh variables holding the same weights (when `model` is
  built), so no optimizer state follows it.
  """
  weights_lib.check_cloneable(model)

  clone_model = keras_compat.keras_of(model).models.clone_model

  def clone_layer(layer):
    if is_model(layer):
      return clone_model(layer, clone_function=clone_layer)
    return layer.__class__.from_config(configure(layer, layer.get_config()))

  clone = clone_model(model, clone_function=clone_layer)
  if model.built:
    # Layer by layer, without regularizer state (Keras 3 lists it among a
    # layer's weights): one of the two models may have it and the other not.
    for (_, original), (_, copy) in zip(weights_lib.layers_with_paths(model),
                                        weights_lib.layers_with_paths(clone)):
      for value, variable in zip(keras_compat.layer_weights(original),
                                 keras_compat.layer_weights(copy)):
        variable.assign(value.numpy())
  return clone


def admm_weights(model):
  """[(PrunableWeight, its ADMM regularizer)] for the model's weights under
  ADMM."""
  found = []
  for weight in weights_lib.prunable_weights(model, require=False):
    regularizer = admm_regularizer(weight)
    if regularizer is not None:
      found.append((weight, regularizer))
  return found


def attach_admm(model,
                target: Optional[targets.Target] = None,
                per_layer: Optional[Mapping[targets.LayerKey,
                                            targets.Target]] = None,
                constraint: Union[constraints_lib.Constraint,
                                  Mapping[str, constraints_lib.Constraint]] = (
                                      constraints_lib.KeepLargest()),
                rho: float = 1e-3,
                masks: Optional[Mapping[str, np.ndarray]] = None,
                min_keep_ratio: float = 0.001,
                allocation: str = 'lamp'):
  """Returns a copy of `model` whose targeted weights carry an ADMM
  regularizer (`AdmmRegularizer` on Keras 2, `Keras3AdmmRegularizer` on
  Keras 3).

  Args:
    model: a built Sequential or functional model of either Keras (models
      nested in it included).
    target: one target for every prunable weight of the layers not named in
      `per_layer`, allocated by one threshold over the weights' LAMP scores
      (`tf_admm.targets.resolve`; `tf_admm.keep_counts` shows the plan).
    per_layer: targets by layer name or layer class.
    constraint: the kind of constraint (default: the `keep` largest
      entries), given without a keep count: each weight gets it fitted to its
      shape and to its target's count (`Constraint.for_weight`). A
      constraint that limits weights by itself (a sparsity pattern) needs no
      target. Weights it cannot fit get what `for_weight` falls back to;
      the weights' constraints say which.
      A {layer name: constraint} dict gives each named layer its own (such
      as quantization bits per layer); other layers get none.
    rho: the initial penalty factor.
    masks: optional {weight path: 0/1 array}: entries already pruned by an
      earlier stage. They are zeroed now and stay exactly 0 during training
      (masked ADMM).
    min_keep_ratio: the floor of a global target's allocation.
    allocation: the score a global target thresholds: 'lamp' or
      'magnitude' (`tf_admm.targets.resolve`).

  It logs which weights it puts under ADMM and which it leaves, with their
  sizes, and warns about weight matrices of layers it does not know how to
  prune (`tf_admm.register_prunable` adds them) and about weights a global
  target leaves under 1% of their entries.
  A regularizer the layer already had is kept and added to the penalty.
  Train the copy with `tf_admm.AdmmCallback`, which reads the constraints
  from it.
  """
  arguments.finite_number('rho', rho)
  arguments.finite_number('min_keep_ratio', min_keep_ratio)
  prunable = {w.path: w for w in weights_lib.prunable_weights(model)}
  for weight, _ in admm_weights(model):
    raise ValueError(f'Weight {weight.path!r} is already under ADMM; call '
                     'tf_admm.remove_admm first.')
  for weight in prunable.values():
    if keras_compat.is_keras3(weight.regularizer):  # a HeldMask
      raise ValueError(
          f'Weight {weight.path!r} holds a mask from '
          'tf_admm.to_pruning_wrappers; call tf_admm.strip_pruning first, and '
          'pass tf_admm.masks_of(model) as masks= to keep its zeros.')
  given = (constraint.values() if isinstance(constraint, Mapping)
           else [constraint])
  counted = [c for c in given if c is not None and c.keep is not None]
  if counted:
    raise ValueError(f'{counted[0]!r} carries a keep count, which attach_admm '
                     'sets for each weight from `target` and `per_layer`: '
                     'give the constraint without keep, and the count as a '
                     'target (such as per_layer={name: '
                     'tf_admm.KeepRatio(0.1)}).')
  masks = dict(masks or {})
  weights_lib.check_masks(prunable, masks)

  if target is None and not per_layer:
    resolved = {path: targets.Resolved(None, None) for path in prunable}
  else:
    resolved = targets.resolve(model, target, per_layer, min_keep_ratio,
                               allocation)
  chosen = {}
  if isinstance(constraint, Mapping):
    names = {w.layer.name for w in prunable.values()}
    unknown = sorted(set(constraint) - names)
    if unknown:
      raise ValueError(f'Constraints are given for {", ".join(unknown)}, '
                       f'which are not layers with prunable weights; those '
                       f'are: {", ".join(sorted(names))}.')
  for path, (keep, weight_target) in resolved.items():
    kind = (constraint.get(prunable[path].layer.name)
            if isinstance(constraint, Mapping) else constraint)
    fitted = kind and kind.for_weight(prunable[path], keep, weight_target)
    if fitted is None:
      continue
    allowed = np.count_nonzero(masks[path]) if path in masks else None
    if keep is not None and allowed is not None and keep > allowed:
      raise ValueError(f'The target of {path!r} keeps {keep} entries, but its '
                       f'mask allows only {allowed}; a stage must not keep '
                       'more weights than the one before it.')
    chosen[path] = fitted
  _check_channels_cuttable(model, prunable, chosen, resolved, target)
  if not chosen:
    raise ValueError(f'{constraint!r} constrains no weight of model '
                     f'{model.name!r} by itself: give a `target` or '
                     '`per_layer` targets.')
  for path in masks:
    if path not in chosen:
      raise ValueError(f'A mask is given for {path!r}, which no target puts '
                       'under ADMM.')

  backend = backends.backend_of(model)
  fitted_by_layer = weights_lib.by_layer(
      (prunable[path], fitted) for path, fitted in chosen.items())

  def configure(layer, config):
    for weight, fitted in fitted_by_layer.get(id(layer), ()):
      config[weight.kind.regularizer] = backend.new_regularizer(
          weight, fitted, rho)
    return config

  clone = clone_with(model, configure)
  for weight, regularizer in admm_weights(clone):
    regularizer.prepare(weight.variable)
    if weight.path in masks:
      mask = np.asarray(masks[weight.path], np.float32)
      regularizer.mask.assign(mask)
      weight.variable.assign(weight.variable * mask)
  _report_plan(model, prunable, chosen)
  return clone


def _check_channels_cuttable(model, prunable, chosen, resolved,
                             target) -> None:
  """Refuses channel constraints whose channels surgery could not cut (and
  leaves such weights out where only the global `target` reached them), and
  channel groups tied to producers without one: before any training."""
  paths = [path for path, fitted in chosen.items() if fitted.removes_channels]
  if not paths:
    return
  graph = channel_graph.ChannelGraph(model)
  layer_paths = {prunable[path].layer_path: path for path in paths}
  for layer_path, path in layer_paths.items():
    why = channel_coupling.uncuttable(graph, layer_path)
    if why is None:
      continue
    if target is not None and resolved[path].target is target:
      del chosen[path]  # the global target covers what it can
      continue
    raise ValueError(
        f'{path!r} is given a channel constraint, but {why}, so its pruned '
        'channels could never be cut out. Leave its layer out of the '
        'channel targets (or prune it with KeepLargest).')
  for layer_path in layer_paths:
    if _has_channel_constraint(prunable, chosen, layer_path):
      untargeted = [p for p in graph.group_of(layer_path).producers
                    if not _has_channel_constraint(prunable, chosen, p)]
      if untargeted:
        raise ValueError(
            f'The output channels of {layer_path!r} are tied (added to the '
            f'same channels) to those of {", ".join(untargeted)}, which have '
            'no channel target: a channel can only be cut from all of them '
            'at once. Give those layers channel targets too, or leave '
            f'{layer_path!r} out.')


def _has_channel_constraint(prunable, chosen, layer_path) -> bool:
  """Whether a weight of the layer at `layer_path` is under a channel
  constraint in `chosen`."""
  return any(prunable[path].layer_path == layer_path and
             fitted.removes_channels for path, fitted in chosen.items())


def _report_plan(model, prunable, chosen) -> None:
  """Logs which weights go under ADMM and which stay; warns about weight
  matrices of layers tf_admm does not know."""
  def listed(paths, describe):
    return ', '.join(describe(path) for path in paths) or 'none'

  def planned(path):
    fitted, size = chosen[path], prunable[path].size
    kept = 'all' if fitted.keep is None else f'{fitted.keep:,}'
    return f'{path} ({type(fitted).__name__}, keeps {kept} of {size:,})'

  logging.info('ADMM constrains %s; leaves %s.', listed(chosen, planned),
               listed([p for p in prunable if p not in chosen],
                      lambda p: f'{p} ({prunable[p].size:,})'))
  unknown = weights_lib.unknown_matrices(model)
  if unknown:
    warnings.warn(
        'ADMM leaves these weight matrices unpruned, as tf_admm does not know '
        'their layers: ' + ', '.join(f'{path} ({size:,})'
                                     for path, size in unknown) +
        '. Register a layer class whose weights take a regularizer argument '
        'with tf_admm.register_prunable(LayerClass, ["kernel", ...]).',
        stacklevel=3)


def remove_admm(model):
  """A copy of `model` without ADMM regularizers (weights as they are)."""
  return with_base_regularizers(model, admm_weights(model))


def with_base_regularizers(model, pairs):
  """A copy of `model` in which each regularizer of `pairs` ([(
  PrunableWeight, regularizer)]) gives way to its `base`, the one the
  layer had before."""
  by_layer = weights_lib.by_layer(pairs)

  def configure(layer, config):
    for weight, regularizer in by_layer.get(id(layer), ()):
      config[weight.kind.regularizer] = regularizer.base
    return config

  return clone_with(model, configure)


def admm_masks(model) -> dict:
  """Hard-prune masks of a model under ADMM: the support of Proj(W).

  Each weight keeps what its constraint allows among the entries its mask
  allows (step 4 of ADMM pruning).

  Returns:
    {weight path: bool numpy array shaped like the weight}.
  """
  pairs = admm_weights(model)
  if not pairs:
    raise ValueError(f'Model {model.name!r} has no ADMM regularizer; attach '
                     'them with tf_admm.attach_admm and train with '
                     'tf_admm.AdmmCallback first, or pass masks explicitly.')
  for weight, regularizer in pairs:
    if not regularizer.started:
      raise ValueError(f'ADMM never started on {weight.path!r}; train with '
                       'tf_admm.AdmmCallback first.')
  chosen = {}
  if any(r.constraint.removes_channels for _, r in pairs):
    chosen = channel_coupling.choose_channels(
        channel_coupling.coupled_channels(channel_graph.ChannelGraph(model),
                                          pairs),
        lambda w, r: w.variable.numpy(), 1.0)
  return {weight.path: regularizer.project(
      weight.variable.numpy(), channels=chosen.get(weight.path)).mask
          for weight, regularizer in pairs}


def without_admm(model, masks):
  """(a copy of `model` without ADMM regularizers, the masks, and
  {id(layer of the copy): [(PrunableWeight, mask)]}), the masks checked
  against the copy's weights; the masks default to `admm_masks(model)`."""
  quantized = [w.path for w, r in admm_weights(model)
               if r.constraint.has_levels]
  if quantized:
    raise ValueError(
        f'Quantized weights ({", ".join(quantized)}): a mask would hold only '
        'their zeros, and retraining would move the rest off their levels. '
        'Keep training the ADMM model (after the last tf_admm.Rounds '
        'projection every weight stays on its level), then export '
        'tf_admm.remove_admm(model).')
  if masks is None:
    masks = admm_masks(model)
  if not masks:
    raise ValueError('No masks given: nothing to prune.')
  plain = remove_admm(model)
  prunable = {w.path: w for w in weights_lib.prunable_weights(plain)}
  weights_lib.check_masks(prunable, masks)
  return plain, masks, weights_lib.by_layer(
      (prunable[path], mask) for path, mask in masks.items())
