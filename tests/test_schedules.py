import numpy as np
import pytest

from tf_admm import schedules


def test_progress_follows_the_cubic_curve_and_stops_at_the_end():
  ramp = schedules.PolynomialRamp(ramp_steps=40)
  steps = np.arange(0, 60)
  expected = 1 - (1 - np.minimum(steps, 40) / 40)**3
  np.testing.assert_allclose([ramp.progress(int(s)) for s in steps], expected)
  assert ramp.progress(-5) == 0.0


def test_prunes_every_n_steps_and_at_the_end_only():
  ramp = schedules.PolynomialRamp(ramp_steps=25, prune_every_steps=10)
  assert [s for s in range(0, 40) if ramp.prunes_at(s)] == [10, 20, 25]


def test_keep_moves_from_start_to_final():
  ramp = schedules.PolynomialRamp(ramp_steps=10, power=1.0)
  assert [ramp.keep(100, 20, s) for s in (0, 5, 10, 15)] == [100, 60, 20, 20]


@pytest.mark.parametrize('kwargs, match', [
    (dict(ramp_steps=0), 'ramp_steps'),
    (dict(ramp_steps=10, prune_every_steps=2.5), 'prune_every_steps'),
    (dict(ramp_steps=10, lookahead_steps=-1), 'lookahead_steps'),
    (dict(ramp_steps=10, power=0), 'power'),
])
def test_bad_arguments_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    schedules.PolynomialRamp(**kwargs)
