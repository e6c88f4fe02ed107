"""Great-circle distances and round-trip estimates: metric properties, then known distances."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.routing.geo import EARTH_RADIUS_KM, estimated_rtt_ms, great_circle_km

PROPERTIES = settings(max_examples=300, deadline=None)

LATS = st.floats(-90, 90, allow_nan=False)
LONS = st.floats(-180, 180, allow_nan=False)
POINTS = st.tuples(LATS, LONS)
HALF_CIRCUMFERENCE_KM = math.pi * EARTH_RADIUS_KM
SLACK_KM = 1e-6
"""Float rounding allowed in metric properties, km."""

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)
NEW_YORK = (40.7128, -74.0060)
TOKYO = (35.6762, 139.6503)


@PROPERTIES
@given(a=POINTS, b=POINTS)
def test_distance_is_symmetric_and_between_zero_and_half_the_circumference(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    there = great_circle_km(*a, *b)
    back = great_circle_km(*b, *a)
    assert 0 <= there <= HALF_CIRCUMFERENCE_KM + SLACK_KM
    assert there == pytest.approx(back, abs=SLACK_KM)


@PROPERTIES
@given(a=POINTS)
def test_a_point_is_zero_km_from_itself(a: tuple[float, float]) -> None:
    assert great_circle_km(*a, *a) == 0.0


@PROPERTIES
@given(a=POINTS, b=POINTS, c=POINTS)
def test_triangle_inequality(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]
) -> None:
    assert great_circle_km(*a, *c) <= great_circle_km(*a, *b) + great_circle_km(*b, *c) + 1e-3


@PROPERTIES
@given(near=st.floats(0, 25_000), far=st.floats(0, 25_000))
def test_the_estimate_grows_with_distance(near: float, far: float) -> None:
    near, far = sorted((near, far))
    assert 0 <= estimated_rtt_ms(near) <= estimated_rtt_ms(far)


def test_paris_to_london_is_about_344_km() -> None:
    assert great_circle_km(*PARIS, *LONDON) == pytest.approx(344, abs=2)


def test_known_long_distances() -> None:
    # Published great-circle distances, within 1%.
    assert great_circle_km(*PARIS, *NEW_YORK) == pytest.approx(5837, rel=0.01)
    assert great_circle_km(*LONDON, *TOKYO) == pytest.approx(9559, rel=0.01)


def test_antipodes_are_half_the_circumference_apart() -> None:
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(HALF_CIRCUMFERENCE_KM)
    assert great_circle_km(90, 0, -90, 0) == pytest.approx(HALF_CIRCUMFERENCE_KM)


def test_longitudes_wrap_around_the_date_line() -> None:
    assert great_circle_km(0, 179.5, 0, -179.5) == pytest.approx(great_circle_km(0, 0, 0, 1))


def test_estimated_round_trip_is_1_ms_plus_2_ms_per_100_km() -> None:
    assert estimated_rtt_ms(0) == 0.0
    assert estimated_rtt_ms(100) == pytest.approx(3.0)
    assert estimated_rtt_ms(1000) == pytest.approx(21.0)
    # Any distance at all pays the base: a site next door is not as close as the site itself.
    assert estimated_rtt_ms(0.001) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("km", [-1.0, -1e-9, math.nan])
def test_a_negative_or_nan_distance_is_refused(km: float) -> None:
    with pytest.raises(ValueError, match="km >= 0"):
        estimated_rtt_ms(km)
