import math

import numpy as np
import pytest

from tf_admm import schedules


def fit_info(steps_per_epoch=10, epochs=4, start_rate=1.0, final_rate=10.0):
  return schedules.FitInfo(steps_per_epoch=steps_per_epoch, epochs=epochs,
                           start_rate=start_rate, final_rate=final_rate)


def bound(schedule, **fit):
  return schedule.bind(fit_info(**fit))


def polynomial(step, ramp_steps, power):
  """Reference: 1 - (1 - t / T) ** power, t clipped to [0, T]."""
  t = min(max(step, 0), ramp_steps)
  return 1.0 - (1.0 - t / ramp_steps)**power


# PolynomialRamp.


@pytest.mark.parametrize('epochs, steps_per_epoch, ramp_steps', [
    (2, 10, 20),
    (1.5, 10, 15),
    (0.3, 7, 2),  # 2.1 steps
    (0.7, 7, 5),  # 4.9 steps: rounded, not truncated
    (0.01, 10, 1),  # never shorter than one step
])
def test_ramp_length_from_epochs(epochs, steps_per_epoch, ramp_steps):
  ramp = bound(schedules.PolynomialRamp(epochs=epochs),
               steps_per_epoch=steps_per_epoch, epochs=50)
  assert ramp.ramp_steps == ramp_steps
  assert ramp.end_step == ramp_steps


@pytest.mark.parametrize('fraction, epochs, steps_per_epoch, ramp_steps', [
    (1.0, 4, 10, 40),
    (0.5, 6, 7, 21),
    (0.25, 3, 12, 9),
    (0.2, 3, 8, 5),  # 4.8 steps
    (0.01, 1, 10, 1),  # never shorter than one step
])
def test_ramp_length_from_a_fraction_of_the_fit(fraction, epochs,
                                                steps_per_epoch, ramp_steps):
  ramp = bound(schedules.PolynomialRamp(fraction=fraction),
               steps_per_epoch=steps_per_epoch, epochs=epochs)
  assert ramp.ramp_steps == ramp_steps
  assert ramp.end_step == ramp_steps


def test_rebinding_follows_the_new_fit():
  ramp = schedules.PolynomialRamp(fraction=0.5)
  assert bound(ramp, steps_per_epoch=10, epochs=4).ramp_steps == 20
  assert bound(ramp, steps_per_epoch=6, epochs=3).ramp_steps == 9


@pytest.mark.parametrize('power', [1.0, 2.0, 3.0, 0.5])
def test_progress_follows_the_polynomial_and_stays_at_one(power):
  ramp = bound(schedules.PolynomialRamp(epochs=4, power=power),
               steps_per_epoch=10)  # 40 steps
  steps = np.arange(0, 60)
  expected = 1 - (1 - np.minimum(steps, 40) / 40)**power
  got = [ramp.progress(int(s)) for s in steps]
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
  assert ramp.progress(0) == 0.0
  assert ramp.progress(-5) == 0.0
  assert all(ramp.progress(s) == 1.0 for s in range(40, 200))
  assert np.all(np.diff(got[:41]) > 0)  # strictly increasing on the ramp
  np.testing.assert_allclose(
      [ramp.prune_progress(int(s)) for s in steps], expected, atol=1e-12)


def test_the_default_power_is_cubic():
  ramp = bound(schedules.PolynomialRamp(epochs=2), steps_per_epoch=10)
  assert ramp.progress(10) == pytest.approx(1 - 0.5**3)
  assert ramp.progress(5) == pytest.approx(1 - 0.75**3)


@pytest.mark.parametrize('ramp_steps, every, prunes', [
    (25, 10, [10, 20, 25]),
    (20, 10, [10, 20]),
    (7, 50, [7]),  # the end only
    (6, 1, [1, 2, 3, 4, 5, 6]),
    (9, 4, [4, 8, 9]),
])
def test_prunes_every_n_steps_and_at_the_end_only(ramp_steps, every, prunes):
  ramp = bound(schedules.PolynomialRamp(epochs=ramp_steps,
                                        prune_every_steps=every),
               steps_per_epoch=1)
  assert ramp.ramp_steps == ramp_steps
  assert [s for s in range(-3, ramp_steps + 40) if ramp.prunes_at(s)] == (
      prunes)


@pytest.mark.parametrize('lookahead', [0, 1, 7, 200])
def test_z_progress_looks_ahead_along_the_ramp(lookahead):
  ramp = bound(schedules.PolynomialRamp(epochs=3, lookahead_steps=lookahead,
                                        power=2.0),
               steps_per_epoch=10)  # 30 steps
  for step in range(0, 45):
    assert ramp.z_progress(step) == pytest.approx(
        polynomial(step + lookahead, 30, 2.0), abs=1e-12)
    assert ramp.z_progress(step) == ramp.progress(step + lookahead)
  if lookahead == 0:
    assert all(ramp.z_progress(s) == ramp.prune_progress(s)
               for s in range(40))


def test_the_default_lookahead_is_200_steps():
  ramp = bound(schedules.PolynomialRamp(epochs=50), steps_per_epoch=10)
  assert ramp.z_progress(100) == pytest.approx(polynomial(300, 500, 3.0))


def test_updates_every_n_steps():
  ramp = bound(schedules.PolynomialRamp(epochs=2, update_every_steps=3),
               steps_per_epoch=10)
  assert [s for s in range(1, 25) if ramp.updates_at(s)] == [
      3, 6, 9, 12, 15, 18, 21, 24]


@pytest.mark.parametrize('every_epochs, steps_per_epoch, interval', [
    (1, 10, 10),
    (0.5, 10, 5),
    (2, 3, 6),
    (0.01, 10, 1),  # at least every step
])
def test_updates_every_n_epochs(every_epochs, steps_per_epoch, interval):
  ramp = bound(schedules.PolynomialRamp(epochs=2,
                                        update_every_epochs=every_epochs),
               steps_per_epoch=steps_per_epoch)
  assert [s for s in range(1, 40) if ramp.updates_at(s)] == list(
      range(interval, 40, interval))


def test_no_updates_by_default():
  ramp = bound(schedules.PolynomialRamp(epochs=2), steps_per_epoch=10)
  assert not any(ramp.updates_at(s) for s in range(1, 100))
  assert ramp.rho_growth == 1.0


def test_rho_growth_is_kept():
  ramp = schedules.PolynomialRamp(epochs=1, update_every_steps=5,
                                  rho_growth=1.5)
  assert ramp.rho_growth == 1.5


@pytest.mark.parametrize('kwargs, match', [
    (dict(), 'give its length as `epochs` or as a `fraction`'),
    (dict(epochs=2, fraction=0.5),
     'give its length as `epochs` or as a `fraction`'),
    (dict(epochs=0), 'epochs must be > 0, got 0'),
    (dict(epochs=-1.5), r'epochs must be > 0, got -1\.5'),
    (dict(epochs=math.nan), 'epochs must be > 0'),
    (dict(fraction=0), r'fraction must be in \(0, 1\], got 0'),
    (dict(fraction=1.5), r'fraction must be in \(0, 1\], got 1\.5'),
    (dict(fraction=-0.2), r'fraction must be in \(0, 1\]'),
    (dict(epochs=1, prune_every_steps=2.5),
     'prune_every_steps must be an integer >= 1, got 2.5'),
    (dict(epochs=1, prune_every_steps=0),
     'prune_every_steps must be an integer >= 1, got 0'),
    (dict(epochs=1, lookahead_steps=-1),
     'lookahead_steps must be an integer >= 0, got -1'),
    (dict(epochs=1, lookahead_steps=1.5),
     'lookahead_steps must be an integer >= 0'),
    (dict(epochs=1, power=0), 'power must be > 0, got 0'),
    (dict(epochs=1, power=-2), 'power must be > 0, got -2'),
    (dict(epochs=1, update_every_steps=5, update_every_epochs=1),
     'Give update_every_epochs or update_every_steps, not both'),
    (dict(epochs=1, update_every_steps=0),
     'update_every_steps must be an integer >= 1, got 0'),
    (dict(epochs=1, update_every_steps=1.5),
     'update_every_steps must be an integer >= 1'),
    (dict(epochs=1, update_every_epochs=0),
     'update_every_epochs must be > 0, got 0'),
    (dict(epochs=1, rho_growth=0.9), 'rho_growth must be >= 1, got 0.9'),
])
def test_bad_ramp_arguments_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    schedules.PolynomialRamp(**kwargs)


def test_edge_arguments_are_accepted():
  ramp = bound(schedules.PolynomialRamp(fraction=1.0, prune_every_steps=1,
                                        lookahead_steps=0, rho_growth=1.0,
                                        update_every_steps=1),
               steps_per_epoch=2, epochs=3)
  assert ramp.ramp_steps == 6
  assert ramp.z_progress(3) == ramp.prune_progress(3)


# Stages.


def stage_progress(rate, start_rate, final_rate):
  """Reference: the progress whose linear count reaches `rate` overall."""
  return (1 / start_rate - 1 / rate) / (1 / start_rate - 1 / final_rate)


def two_stages():
  return bound(schedules.Stages(rates=[2, 4], epochs_per_stage=1),
               steps_per_epoch=5, epochs=4, start_rate=1, final_rate=8)


def test_stages_prune_at_each_boundary_only():
  stages = two_stages()
  assert [s for s in range(-2, 40) if stages.prunes_at(s)] == [5, 10]
  assert stages.end_step == 10


def test_stage_progress_matches_the_closed_form():
  stages = two_stages()
  first, second = stage_progress(2, 1, 8), stage_progress(4, 1, 8)
  assert first == pytest.approx(4 / 7) and second == pytest.approx(6 / 7)
  # Stage 1 aims at rate 2, stage 2 at rate 4, then the targets.
  for step in range(0, 5):
    assert stages.z_progress(step) == pytest.approx(first, abs=1e-12)
  for step in range(5, 10):
    assert stages.z_progress(step) == pytest.approx(second, abs=1e-12)
  for step in range(10, 30):
    assert stages.z_progress(step) == 1.0
  # Each boundary's prune reaches the stage just ended.
  assert stages.prune_progress(5) == pytest.approx(first, abs=1e-12)
  assert stages.prune_progress(10) == pytest.approx(second, abs=1e-12)


@pytest.mark.parametrize('rates, start_rate, final_rate', [
    ([3], 1.0, 10.0),
    ([1.5, 2.5, 5.0], 1.2, 20.0),
    ([10, 100], 2.0, math.inf),  # no counts: final kept fraction 0
])
def test_stage_progress_for_other_rates(rates, start_rate, final_rate):
  stages = bound(schedules.Stages(rates=rates, epochs_per_stage=0.5),
                 steps_per_epoch=6, start_rate=start_rate,
                 final_rate=final_rate)  # 3 steps a stage
  assert [s for s in range(40) if stages.prunes_at(s)] == [
      3 * (i + 1) for i in range(len(rates))]
  expected = [stage_progress(r, start_rate, final_rate) for r in rates]
  for i, want in enumerate(expected):
    assert stages.z_progress(3 * i) == pytest.approx(want, abs=1e-12)
    assert stages.prune_progress(3 * (i + 1)) == pytest.approx(want,
                                                               abs=1e-12)
  assert stages.z_progress(3 * len(rates)) == 1.0
  assert all(0 < p < 1 for p in expected) and expected == sorted(expected)


def test_stages_update_every_epoch_by_default():
  stages = two_stages()
  assert [s for s in range(1, 21) if stages.updates_at(s)] == [5, 10, 15, 20]


def test_stages_updates_can_be_set():
  stages = bound(schedules.Stages(rates=[2], epochs_per_stage=1,
                                  update_every_steps=3),
                 steps_per_epoch=10, start_rate=1, final_rate=8)
  assert [s for s in range(1, 13) if stages.updates_at(s)] == [3, 6, 9, 12]
  stages = bound(schedules.Stages(update_every_epochs=None),
                 steps_per_epoch=10)
  assert not any(stages.updates_at(s) for s in range(1, 50))
  stages = bound(schedules.Stages(update_every_epochs=0.5, rho_growth=1.3),
                 steps_per_epoch=10)
  assert [s for s in range(1, 16) if stages.updates_at(s)] == [5, 10, 15]
  assert stages.rho_growth == 1.3


def test_stages_without_rates_never_prune_and_aim_at_the_targets():
  stages = bound(schedules.Stages(), steps_per_epoch=5, start_rate=1,
                 final_rate=8)
  assert not any(stages.prunes_at(s) for s in range(-2, 100))
  assert all(stages.z_progress(s) == 1.0 for s in range(0, 100))
  assert all(stages.prune_progress(s) == 1.0 for s in range(0, 100))
  assert stages.end_step == 0


@pytest.mark.parametrize('rates, start_rate, final_rate', [
    ([2, 4], 2.0, 8.0),  # the first rate must exceed the start
    ([2, 4], 3.0, 8.0),
    ([2, 8], 1.0, 8.0),  # the last must stay below the targets
    ([2, 9], 1.0, 8.0),
])
def test_bind_rejects_rates_outside_start_and_final(rates, start_rate,
                                                    final_rate):
  stages = schedules.Stages(rates=rates, epochs_per_stage=1)
  with pytest.raises(ValueError, match='must lie between the rate ADMM '
                     'starts from'):
    stages.bind(fit_info(start_rate=start_rate, final_rate=final_rate))


@pytest.mark.parametrize('kwargs, match', [
    (dict(rates=[4, 2], epochs_per_stage=1), 'rates must increase'),
    (dict(rates=[2, 2], epochs_per_stage=1), 'rates must increase'),
    (dict(rates=[1, 2], epochs_per_stage=1), r'rates must increase, each > 1'),
    (dict(rates=[0.5], epochs_per_stage=1), r'rates must increase, each > 1'),
    (dict(rates=[2, 4]), 'intermediate rates need epochs_per_stage > 0, got '
     'None'),
    (dict(rates=[2], epochs_per_stage=0), 'need epochs_per_stage > 0, got 0'),
    (dict(rates=[2], epochs_per_stage=-1), 'need epochs_per_stage > 0'),
    (dict(update_every_epochs=1, update_every_steps=2), 'not both'),
    (dict(rho_growth=0.5), 'rho_growth must be >= 1'),
])
def test_bad_stages_arguments_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    schedules.Stages(**kwargs)


# Rounds.


@pytest.mark.parametrize('fraction, rounds, held', [
    (0.3, 4, [0.3, 0.6, 0.9, 1.0]),
    (0.5, 2, [0.5, 1.0]),
    (1.0, 1, [1.0]),
    (0.25, 4, [0.25, 0.5, 0.75, 1.0]),
])
def test_rounds_hold_a_fraction_more_at_each_round_end(fraction, rounds,
                                                       held):
  schedule = bound(schedules.Rounds(fraction, epochs_per_round=2),
                   steps_per_epoch=5)
  assert schedule.rounds == rounds and schedule.end_step == rounds * 10
  prunes = [s for s in range(-2, 100) if schedule.prunes_at(s)]
  assert prunes == [10 * (i + 1) for i in range(rounds)]
  assert [schedule.prune_progress(s) for s in prunes] == pytest.approx(held)
  # Between round ends the Z-step aims at the next round's share.
  assert [schedule.z_progress(s - 1) for s in prunes] == pytest.approx(held)
  assert schedule.z_progress(schedule.end_step + 7) == 1.0


def test_rounds_update_every_epoch_by_default():
  schedule = bound(schedules.Rounds(), steps_per_epoch=4)
  assert [s for s in range(1, 13) if schedule.updates_at(s)] == [4, 8, 12]


@pytest.mark.parametrize('kwargs, match', [
    (dict(fraction_per_round=0), 'fraction_per_round must be in'),
    (dict(fraction_per_round=1.5), 'fraction_per_round must be in'),
    (dict(epochs_per_round=0), 'epochs_per_round must be > 0'),
])
def test_bad_rounds_arguments_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    schedules.Rounds(**kwargs)


@pytest.mark.parametrize('schedule', [
    schedules.PolynomialRamp(epochs=2, prune_every_steps=5,
                             lookahead_steps=7, power=2.0,
                             update_every_steps=3, rho_growth=1.2),
    schedules.PolynomialRamp(fraction=0.5),
    schedules.Stages(rates=[2.0, 4.0], epochs_per_stage=1),
    schedules.Stages(),
    schedules.Rounds(0.5, epochs_per_round=1.5, update_every_steps=2,
                     rho_growth=1.06),
])
def test_binding_leaves_the_schedule_as_given_and_configs_round_trip(
    schedule):
  before = dict(vars(schedule))
  config = schedule.get_config()
  fit = dict(steps_per_epoch=10, epochs=4, final_rate=10.0)
  first = bound(schedule, **fit)
  assert vars(schedule) == before  # bind made a copy
  remade = type(schedule).from_config(config)
  assert remade.get_config() == config
  second = bound(remade, **fit)
  steps = range(0, first.end_step + 5)
  for query in ('prunes_at', 'updates_at', 'prune_progress', 'z_progress'):
    assert [getattr(first, query)(s) for s in steps] == [
        getattr(second, query)(s) for s in steps], query
