"""The one One-Euro filter (adasr.one_euro) that smooths the face box and the sender's motion."""

from __future__ import annotations

import numpy as np
import pytest

from adasr.one_euro import MIN_STEP_S, OneEuroFilter, OneEuroParams


def test_one_euro_first_sample_passes_and_noise_is_reduced() -> None:
    rng = np.random.default_rng(0)
    f = OneEuroFilter(OneEuroParams(min_cutoff_hz=1.0, beta=0.0))
    x0 = np.array([3.0, -2.0])
    assert np.array_equal(f(x0, 0.0), x0)
    noisy = x0 + rng.normal(0, 0.5, size=(300, 2))
    out = np.array([f(x, (i + 1) / 30) for i, x in enumerate(noisy)])
    assert out[100:].std(axis=0).max() < 0.4 * noisy[100:].std(axis=0).min()  # theory: √(α/(2−α)) ≈ 0.31
    assert np.abs(out[100:].mean(axis=0) - x0).max() < 0.1


def test_timestamps_and_steps_filter_alike() -> None:
    """The face box passes the step since the last frame, the sender capture times: one filter, same output."""
    samples = np.random.default_rng(1).normal(0, 1, size=(60, 3))
    by_time, by_step = OneEuroFilter(), OneEuroFilter()
    timed = np.array([by_time(x, i / 30) for i, x in enumerate(samples)])
    stepped = np.array([by_step.step(x, 1 / 30) for x in samples])
    np.testing.assert_allclose(timed, stepped, rtol=1e-12, atol=1e-12)


def test_a_time_that_does_not_increase_counts_as_one_millisecond() -> None:
    by_time, by_step = OneEuroFilter(), OneEuroFilter()
    a, b = np.array([0.0]), np.array([1.0])
    by_time(a, 2.0)
    by_step.step(a, 1.0)
    assert by_time(b, 2.0) == pytest.approx(by_step.step(b, MIN_STEP_S))
    assert by_time(a, 1.0) == pytest.approx(by_step.step(a, MIN_STEP_S))


def test_reset_and_a_new_shape_start_afresh() -> None:
    f = OneEuroFilter()
    f(np.zeros(2), 0.0)
    assert not np.array_equal(f(np.ones(2), 0.1), np.ones(2)), "a running filter smooths"
    f.reset()
    assert np.array_equal(f(np.ones(2), 0.2), np.ones(2))
    assert np.array_equal(f.step(np.full(3, 5.0), 0.1), np.full(3, 5.0))
    out = f.step(np.full(3, 5.0), 0.1)
    out[:] = -1  # callers get copies: the filter's state is not theirs to change
    assert np.array_equal(f.step(np.full(3, 5.0), 0.1), np.full(3, 5.0))


@pytest.mark.parametrize("params", [dict(min_cutoff_hz=0.0), dict(d_cutoff_hz=-1.0), dict(beta=-0.1)])
def test_parameters_are_checked(params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="One-Euro"):
        OneEuroParams(**params)
