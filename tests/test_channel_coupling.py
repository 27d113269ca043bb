"""Tied channels pruned as one, through the public API, on both Kerases:
residual streams lose channels in their groups, and surgery cuts them."""

import numpy as np
import pytest

import tf_admm
from tf_admm import channel_coupling
from tf_admm import channel_graph
from tf_admm import macs
from tf_admm import surgery
from tests.conftest import application_mobilenet_v2
from tests.test_channel_graph import residual_model


def _fit_admm(admm, keras, x, y, epochs=2):
  admm.compile(keras.optimizers.Adam(1e-3),
               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  admm.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[
      tf_admm.AdmmCallback(tf_admm.PolynomialRamp(
          epochs=1, prune_every_steps=1, lookahead_steps=1))])


def _prune_and_cut(admm, keras, x, y, retrain=True):
  """Masked retraining (if asked) with pruned channels silenced, then
  surgery: (the stripped masked model, the small one, widths)."""
  held = tf_admm.to_pruning_wrappers(admm)
  surgery.silence_pruned_channels(held)
  if retrain:
    held.compile(keras.optimizers.Adam(1e-3),
                 keras.losses.SparseCategoricalCrossentropy(
                     from_logits=True))
    held.fit(x, y, batch_size=8, epochs=1, verbose=0)
  masked = tf_admm.strip_pruning(held)
  small, widths = surgery.remove_channels(masked)
  surgery.checked_difference(masked, small, x)
  return masked, small, widths


def _zero_channels(kernel):
  return set(np.flatnonzero(~kernel.reshape(-1, kernel.shape[-1]).any(0)))


def test_a_residual_stream_loses_the_same_channels_from_every_producer(
    any_keras):
  any_keras.utils.set_random_seed(0)
  model = residual_model(any_keras)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
  y = rng.integers(0, 3, 32)
  # b and c ask for fewer channels than a: the group keeps what a asks.
  admm = tf_admm.attach_admm(model, per_layer={
      'a': tf_admm.KeepRatio(0.5), 'b': tf_admm.KeepRatio(0.25),
      'c': tf_admm.KeepRatio(0.25)}, constraint=tf_admm.KeepChannels())
  _fit_admm(admm, any_keras, x, y)
  masks = tf_admm.admm_masks(admm)
  zeroed = [_zero_channels(masks[f'{name}/kernel']) for name in 'abc']
  assert zeroed[0] == zeroed[1] == zeroed[2] and len(zeroed[0]) == 2
  masked, small, widths = _prune_and_cut(admm, any_keras, x, y)
  assert widths['a'] == widths['b'] == widths['c'] == (4, 2)
  assert macs.model_macs(small)['total'] < macs.model_macs(masked)['total']


def test_coupled_choice_is_the_projection_onto_the_tied_channels():
  """Against brute force: the kept channels hold the most squared norm
  summed over the producers."""
  rng = np.random.default_rng(1)
  group = channel_graph.ChannelGroup(('a', 'b'), {'a': np.arange(5),
                                                  'b': np.arange(5)},
                                     np.zeros(5, bool))
  a, b = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
  kept = group.keep({'a': np.sum(a**2, 0), 'b': np.sum(b**2, 0)}, 2)
  best = max(((i, j) for i in range(5) for j in range(i + 1, 5)),
             key=lambda c: sum(np.sum(a[:, k]**2) + np.sum(b[:, k]**2)
                               for k in c))
  assert set(np.flatnonzero(kept)) == set(best)


def test_channel_targets_that_cannot_be_cut_are_refused_at_attach(any_keras):
  model = residual_model(any_keras)
  with pytest.raises(ValueError, match=r"'out/kernel'.*model output"):
    tf_admm.attach_admm(model, per_layer={'out': tf_admm.KeepRatio(0.5)},
                        constraint=tf_admm.KeepChannels())
  with pytest.raises(ValueError, match=r"'a' are tied.*b, c"):
    tf_admm.attach_admm(model, per_layer={'a': tf_admm.KeepRatio(0.5)},
                        constraint=tf_admm.KeepChannels())
  # A global target leaves out what it cannot cut.
  admm = tf_admm.attach_admm(model, tf_admm.KeepRatio(0.5),
                             constraint=tf_admm.KeepChannels())
  assert [w.path for w, _ in tf_admm.admm_weights(admm)] == [
      'a/kernel', 'b/kernel', 'c/kernel', 'd/kernel']


def test_application_mobilenet_v2_prunes_its_residual_streams(any_keras):
  """keras.applications' MobileNetV2 (untrained, 32x32): every stream's
  producers lose the same channels, surgery cuts them, and the small model
  computes what the masked one does."""
  model, x, y = application_mobilenet_v2(any_keras)
  admm = tf_admm.attach_admm(model, tf_admm.KeepRatio(0.5),
                             constraint=tf_admm.KeepChannels())
  streams = [g for g in channel_graph.ChannelGraph(model).groups
             if len(g.producers) > 1]
  assert len(streams) == 5  # the stages with residual Adds
  assert len(channel_coupling.coupled_channels(
      channel_graph.ChannelGraph(admm), tf_admm.admm_weights(admm))) == 5
  _fit_admm(admm, any_keras, x, y, epochs=1)
  # Silenced channels hold through retraining (the residual model above
  # shows it); here the cut alone.
  _, small, widths = _prune_and_cut(admm, any_keras, x, y, retrain=False)
  for stream in streams:
    names = [path.split('/')[-1] for path in stream.producers]
    kept = {widths[name] for name in names}
    assert len(kept) == 1, names  # one width for the whole stream
    before, after = kept.pop()
    assert after < before, names
  assert small.count_params() < model.count_params()
