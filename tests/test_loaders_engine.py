"""The engine rule (run_with_engine, EngineUnavailable) and the primary-key ranges."""

from __future__ import annotations

import pytest

from analysis_lib import EngineUnavailable
from analysis_lib.loaders import in_range, pk_ranges, pk_span, run_with_engine, split_reason
from project.buildings.models import Building, ZipCode
from tests.conftest import square

# --- run_with_engine --------------------------------------------------------------------------


def _recorder(fail: dict[str, Exception]):
    calls: list[str] = []

    def run(name: str) -> str:
        calls.append(name)
        if name in fail:
            raise fail[name]
        return f"rows from {name}"

    return calls, run


@pytest.mark.parametrize(
    ("engine", "fail", "expected", "calls"),
    [
        ("dbapi", {}, "rows from dbapi", ["dbapi"]),
        ("adbc", {}, "rows from adbc", ["adbc"]),
        ("auto", {}, "rows from adbc", ["adbc"]),
        ("auto", {"adbc": EngineUnavailable("refused")}, "rows from dbapi", ["adbc", "dbapi"]),
        (
            "auto",
            {"adbc": EngineUnavailable("type change", rows=50)},
            "rows from dbapi",
            ["adbc", "dbapi"],
        ),
    ],
)
def test_run_with_engine_table(engine, fail, expected, calls):
    seen, run = _recorder(fail)

    assert run_with_engine(engine, run) == expected
    assert seen == calls


def test_adbc_asked_for_reports_why_it_cannot():
    seen, run = _recorder({"adbc": EngineUnavailable("no driver here")})

    with pytest.raises(EngineUnavailable, match="engine='adbc' cannot be used: no driver here"):
        run_with_engine("adbc", run)
    assert seen == ["adbc"]  # never falls back when ADBC was asked for


def test_other_errors_are_not_a_fallback():
    seen, run = _recorder({"adbc": ZeroDivisionError("a bug, not a refusal")})

    with pytest.raises(ZeroDivisionError):
        run_with_engine("auto", run)
    assert seen == ["adbc"]


def test_auto_goes_straight_to_dbapi_when_pyarrow_is_kept_out(monkeypatch):
    from analysis_lib.loaders import _arrow

    monkeypatch.setattr(_arrow, "pyarrow_kept_out", lambda: True)
    seen, run = _recorder({})

    assert run_with_engine("auto", run) == "rows from dbapi"
    assert seen == ["dbapi"]


@pytest.mark.parametrize("engine", ["ADBC", "", None, "pyarrow"])
def test_run_with_engine_rejects_bad_engine(engine):
    seen, run = _recorder({})
    with pytest.raises(ValueError, match="`engine` must be one of 'auto', 'dbapi', 'adbc'; got"):
        run_with_engine(engine, run)
    assert seen == []


def test_engine_unavailable_is_a_value_error_with_rows():
    error = EngineUnavailable("why", rows=7)
    assert isinstance(error, ValueError)
    assert (error.engine, error.rows, str(error)) == (
        "adbc",
        7,
        "engine='adbc' cannot be used: why",
    )


# --- primary-key ranges -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "n", "expected"),
    [
        ((1, 10), 1, [(1, 11)]),
        ((1, 10), 2, [(1, 6), (6, 11)]),
        ((1, 10), 3, [(1, 4), (4, 7), (7, 11)]),
        ((5, 7), 10, [(5, 6), (6, 7), (7, 8)]),  # never more ranges than keys
        ((42, 42), 4, [(42, 43)]),
    ],
)
def test_pk_ranges_table(span, n, expected):
    ranges = pk_ranges(Building.objects.all(), n, span=span)

    assert ranges == expected
    assert ranges[0][0] == span[0] and ranges[-1][1] == span[1] + 1
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # no gap, no overlap


@pytest.mark.parametrize(("n", "error"), [(0, ValueError), (-1, ValueError), (2.0, TypeError)])
def test_pk_ranges_rejects_bad_n(n, error):
    with pytest.raises(error, match="`n` must be a positive int"):
        pk_ranges(Building.objects.all(), n, span=(1, 10))


@pytest.mark.django_db
def test_ranges_cover_the_queryset_exactly_once(make_building):
    for i in range(23):
        make_building(square(i, 0, 0.5), footprint_m2=float(i))
    qs = Building.objects.filter(footprint_m2__gte=3).order_by("pk")
    ids = list(qs.values_list("pk", flat=True))

    assert pk_span(qs) == (ids[0], ids[-1])
    for n in (1, 2, 3, 7, 100):
        parts = [
            list(in_range(qs, bounds).values_list("pk", flat=True)) for bounds in pk_ranges(qs, n)
        ]
        assert [pk for part in parts for pk in part] == ids
    assert pk_span(qs.none()) is None
    assert pk_ranges(Building.objects.filter(footprint_m2__lt=0), 3) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: Building.objects.order_by("pk"), None),
        (lambda: Building.objects.all()[:5], "sliced"),
        (lambda: Building.objects.distinct(), "DISTINCT"),
        (lambda: Building.objects.order_by("height_m"), "ordered by something other"),
        (lambda: Building.objects.union(Building.objects.all()), "union"),
        (lambda: ZipCode.objects.order_by("code"), "ordered by something other"),
    ],
)
def test_split_reason_table(make, reason):
    found = split_reason(make())
    if reason is None:
        assert found is None
    else:
        assert reason in found
