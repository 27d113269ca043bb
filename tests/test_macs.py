"""MAC counts against hand-worked arithmetic, and MAC budgets."""

import numpy as np
import pytest

from tf_admm import macs
from tf_admm import models
from tf_admm.keras_compat import keras
from tests.conftest import separable_cnn

layers = keras.layers


def test_lenet5_macs_by_hand():
  counted = macs.model_macs(models.lenet5())
  want = {
      'conv1': 24 * 24 * (5 * 5 * 1) * 20,  # output positions x kernel x filters
      'conv2': 8 * 8 * (5 * 5 * 20) * 50,
      'fc1': 800 * 500,
      'fc2': 500 * 10,
  }
  assert counted == {'total': sum(want.values()), 'layers': want}


def test_separable_depthwise_and_transposed_macs_by_hand():
  # (10, 10, 3) -> sep (8, 8, 8) -> bn -> dw x2 (6, 6, 16) -> up (8, 8, 5)
  # -> flatten (320) -> fc (3).
  counted = macs.model_macs(separable_cnn())['layers']
  assert counted == {
      'sep': 8 * 8 * 9 * 3 + 8 * 8 * 3 * 8,  # depthwise, then pointwise
      'dw': 6 * 6 * 9 * 8 * 2,
      'up': 6 * 6 * 9 * 16 * 5,  # each input position spreads a kernel
      'fc': 320 * 3,
  }


def test_dense_on_a_sequence_counts_every_position():
  model = keras.Sequential([keras.Input((7, 4)), layers.Dense(3, name='d')])
  assert macs.model_macs(model)['layers'] == {'d': 7 * 4 * 3}


@pytest.mark.parametrize('factor', [2.0, 5.0])
def test_keep_ratios_for_macs_stay_within_the_budget(factor):
  model = models.lenet5()
  profile = {'conv1': 1.0, 'conv2': 1.0, 'fc1': 0.5}
  ratios = macs.keep_ratios_for_macs(model, profile, factor)
  widths = {'conv1': 20, 'conv2': 50, 'fc1': 500}
  counts = {name: ratios[name] * widths[name] for name in profile}
  for name, count in counts.items():
    assert count == round(count) and count >= 1, name  # whole channels
  budget = macs.model_macs(model)['total'] / factor
  small = macs.with_channels(model, {n: round(c) for n, c in counts.items()})
  assert macs.model_macs(small)['total'] <= budget
  # Not far below it: a channel more in every layer is over.
  wider = macs.with_channels(model, {n: round(c) + 1
                                     for n, c in counts.items()})
  assert macs.model_macs(wider)['total'] > budget
  # The profile's shape survives: fc1 keeps about half conv2's share.
  assert ratios['fc1'] == pytest.approx(ratios['conv2'] / 2, abs=0.05)


def test_unreachable_or_bad_mac_targets_are_refused():
  model = models.lenet5()
  with pytest.raises(ValueError, match='out of reach'):
    macs.keep_ratios_for_macs(model, {'fc1': 1.0}, 50.0)
  with pytest.raises(ValueError, match='a factor >= 1'):
    macs.keep_ratios_for_macs(model, {'fc1': 1.0}, 0.5)
  with pytest.raises(ValueError, match='pool1.*Dense and convolution'):
    macs.keep_ratios_for_macs(model, {'pool1': 1.0}, 2.0)
  with pytest.raises(ValueError, match='nope'):
    macs.with_channels(model, {'nope': 3})


def test_keep_ratios_by_norm_keep_the_strongest_channels_within_budget():
  model = models.lenet5()
  rng = np.random.default_rng(0)
  # conv2's channels weak but for five; fc1's all alike.
  kernel, bias = model.get_layer('conv2').get_weights()
  kernel *= 0.01
  kernel[..., :5] *= 100
  model.get_layer('conv2').set_weights([kernel, bias])
  model.get_layer('fc1').set_weights([
      np.ones((800, 500), np.float32) + 0.01 * rng.random((800, 500)),
      np.zeros(500, np.float32)])
  ratios = macs.keep_ratios_by_norm(model, ['conv1', 'conv2', 'fc1'], 4.0)
  counts = {'conv1': round(ratios['conv1'] * 20),
            'conv2': round(ratios['conv2'] * 50),
            'fc1': round(ratios['fc1'] * 500)}
  small = macs.with_channels(model, counts)
  assert macs.model_macs(small)['total'] <= 2293000 / 4
  # conv2 keeps about its five strong channels; fc1, all alike, keeps many.
  assert 5 <= counts['conv2'] <= 8
  assert counts['fc1'] > 100
