"""The poll schedules, as pure functions of a run's age."""

from __future__ import annotations

from hexdbt.hex.polls import AdaptiveSchedule, FixedSchedule


def _poll_ages(
    schedule: AdaptiveSchedule | FixedSchedule, end_s: float, expected: float | None
) -> list[float]:
    age = schedule.first_delay_s()
    ages = [age]
    while age < end_s:
        age += schedule.interval_s(age, expected)
        ages.append(age)
    return ages


def test_adaptive_intervals_start_short_grow_with_age_and_are_capped() -> None:
    schedule = AdaptiveSchedule()
    assert schedule.first_delay_s() == 5.0
    assert schedule.interval_s(30, None) == 10.0
    assert schedule.interval_s(400, None) == 40.0
    assert schedule.interval_s(50_000, None) == 120.0


def test_a_known_expected_length_stretches_early_intervals() -> None:
    schedule = AdaptiveSchedule()
    assert schedule.interval_s(30, 600) == 60.0
    assert schedule.interval_s(30, 60) == 10.0


def test_adaptive_detection_delay_stays_within_a_tenth_of_the_run_or_ten_seconds() -> None:
    schedule = AdaptiveSchedule()
    for end_s in (60.0, 600.0, 3600.0):
        for expected in (None, end_s):
            ages = _poll_ages(schedule, end_s, expected)
            assert ages[-1] - end_s <= max(10.0, 0.1 * end_s)


def test_adaptive_spends_far_fewer_polls_than_fixed_on_long_runs() -> None:
    hour_adaptive = len(_poll_ages(AdaptiveSchedule(), 3600.0, None))
    hour_fixed = len(_poll_ages(FixedSchedule(10.0), 3600.0, None))
    assert hour_fixed == 360
    assert hour_adaptive <= hour_fixed / 4


def test_fixed_schedule_is_the_seeds() -> None:
    schedule = FixedSchedule()
    assert schedule.first_delay_s() == 10.0
    assert schedule.interval_s(3000, 60) == 10.0
