"""Putting ADMM regularizers on a model's layers and taking them off."""

from typing import Iterable, Mapping, Optional

import numpy as np
import tf_keras as keras

from tf_admm import targets
from tf_admm.regularizer import AdmmRegularizer


def _check_cloneable(model):
  if not isinstance(model, keras.Model):
    raise ValueError(f'Expected a tf_keras Model, got {type(model).__name__}. '
                     'Build models with `import tf_keras`, not Keras 3.')
  if not (isinstance(model, keras.Sequential) or model._is_graph_network):  # pylint: disable=protected-access
    raise ValueError(
        f'Model {model.name!r} is a subclassed model; tf_admm (like tfmot) '
        'needs a Sequential or functional model, whose layers it can clone.')


def clone_with(model, configure):
  """Clones `model` with layer configs edited by `configure(layer, config)`.

  The clone has fresh variables holding the same weights (when `model` is
  built), so no optimizer state follows it.
  """
  _check_cloneable(model)

  def clone_layer(layer):
    return layer.__class__.from_config(configure(layer, layer.get_config()))

  clone = keras.models.clone_model(model, clone_function=clone_layer)
  if model.built:
    clone.set_weights(model.get_weights())
  return clone


def admm_layers(model):
  """[(layer, AdmmRegularizer)] for the model's layers under ADMM."""
  return [(l, l.kernel_regularizer) for l in model.layers
          if isinstance(getattr(l, 'kernel_regularizer', None),
                        AdmmRegularizer)]


def attach_admm(model,
                layers: Iterable[str],
                rho: float = 1e-3,
                masks: Optional[Mapping[str, np.ndarray]] = None):
  """Returns a copy of `model` whose named layers carry an AdmmRegularizer.

  Args:
    model: a Sequential or functional tf_keras model, built or not.
    layers: names of prunable layers to put under ADMM (for example the keys
      of `tf_admm.keep_counts(...)`).
    rho: the initial penalty factor.
    masks: optional {layer name: 0/1 array}: entries already pruned by an
      earlier stage. They are zeroed now and stay exactly 0 during training
      (masked ADMM). Needs a built model.

  A regularizer the layer already had is kept and added to the penalty.
  """
  names = list(layers)
  masks = dict(masks or {})
  _check_cloneable(model)
  prunable = {l.name: l for l in targets.prunable_layers(model)}
  for name in names + list(masks):
    if name not in prunable:
      raise ValueError(f'Layer {name!r} is not a prunable layer of model '
                       f'{model.name!r}; prunable layers are: '
                       f'{", ".join(prunable)}.')
  for name in masks:
    if name not in names:
      raise ValueError(f'A mask is given for layer {name!r}, which is not '
                       'among the layers put under ADMM.')
  if masks and not model.built:
    raise ValueError('Masks need a built model: build it first (give it an '
                     'Input or call model.build(input_shape)).')

  for pair_layer, _ in admm_layers(model):
    raise ValueError(f'Layer {pair_layer.name!r} is already under ADMM; call '
                     'tf_admm.remove_admm first.')

  def configure(layer, config):
    if layer.name in names:
      config['kernel_regularizer'] = AdmmRegularizer(
          rho, base=layer.kernel_regularizer)
    return config

  clone = clone_with(model, configure)
  for layer, regularizer in admm_layers(clone):
    if model.built:
      regularizer.build(layer.kernel)
    if layer.name in masks:
      mask = np.asarray(masks[layer.name], np.float32)
      if mask.shape != tuple(layer.kernel.shape):
        raise ValueError(f'Mask for layer {layer.name!r} has shape '
                         f'{mask.shape}, its kernel {tuple(layer.kernel.shape)}.')
      regularizer.mask.assign(mask)
      layer.kernel.assign(layer.kernel * mask)
  return clone


def remove_admm(model):
  """Returns a copy of `model` without ADMM regularizers (weights as they are)."""

  def configure(layer, config):
    regularizer = getattr(layer, 'kernel_regularizer', None)
    if isinstance(regularizer, AdmmRegularizer):
      config['kernel_regularizer'] = regularizer.base
    return config

  return clone_with(model, configure)


def admm_masks(model) -> dict:
  """Hard-prune masks of a model under ADMM: the support of Proj(W).

  Each layer keeps its regularizer's current `keep` count of largest-magnitude
  weights among those its mask allows (step 4 of ADMM pruning).

  Returns:
    {layer name: bool numpy array shaped like the kernel}.
  """
  pairs = admm_layers(model)
  if not pairs:
    raise ValueError(f'Model {model.name!r} has no AdmmRegularizer; attach '
                     'them with tf_admm.attach_admm and train with '
                     'tf_admm.AdmmCallback first, or pass masks explicitly.')
  result = {}
  for layer, regularizer in pairs:
    if not regularizer.built or not bool(regularizer.initialized):
      raise ValueError(f'ADMM state of layer {layer.name!r} was never '
                       'initialized; train with tf_admm.AdmmCallback first.')
    result[layer.name] = regularizer.project(layer.kernel).mask.numpy()
  return result
