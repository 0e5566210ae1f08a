"""The one validation style: TypeError for a wrong type, ValueError for a bad value, one message."""

import pytest

from analysis_lib import _checks as checks

VALID = [
    (checks.check_positive_int, ("chunk_size", 1)),
    (checks.check_positive_int, ("chunk_size", 10**9)),
    (lambda n, v: checks.check_positive_int(n, v, allow_none=True), ("workers", None)),
    (checks.check_positive_number, ("interval", 0.01)),
    (checks.check_choice, ("engine", "adbc", ("auto", "dbapi", "adbc"))),
    (checks.check_type, ("label", "x", str, "a str")),
    (checks.check_names, ("fields", ["a", "b"])),
]

INVALID = [
    (
        checks.check_positive_int,
        ("chunk_size", 0),
        ValueError,
        "`chunk_size` must be a positive int; got 0",
    ),
    (checks.check_positive_int, ("chunk_size", -3), ValueError, "got -3"),
    (checks.check_positive_int, ("chunk_size", 2.5), TypeError, "got 2.5 (float)"),
    (checks.check_positive_int, ("chunk_size", True), TypeError, "got True (bool)"),
    (checks.check_positive_int, ("chunk_size", "10"), TypeError, "got '10' (str)"),
    (checks.check_positive_int, ("chunk_size", None), TypeError, "got None"),
    (
        checks.check_positive_number,
        ("interval", 0),
        ValueError,
        "`interval` must be a positive number",
    ),
    (checks.check_positive_number, ("interval", float("nan")), ValueError, "got nan"),
    (checks.check_positive_number, ("interval", "1"), TypeError, "(str)"),
    (
        checks.check_choice,
        ("engine", "fast", ("auto", "adbc")),
        ValueError,
        "`engine` must be one of 'auto', 'adbc'; got 'fast'",
    ),
    (
        checks.check_type,
        ("label", 3, str, "a str"),
        TypeError,
        "`label` must be a str; got 3 (int)",
    ),
    (checks.check_type, ("flag", 1, int, "an int"), None, None),
    (checks.check_type, ("n", False, int, "an int"), TypeError, "got False (bool)"),
    (checks.check_names, ("fields", "id"), TypeError, "`fields` must be a list or tuple of names"),
    (checks.check_names, ("fields", ["id", 3]), TypeError, "got 3 (int)"),
    (checks.check_names, ("fields", []), ValueError, "non-empty"),
    (checks.check_names, ("fields", ["id", "id"]), ValueError, "distinct names; got 'id'"),
]


@pytest.mark.parametrize(("check", "args"), VALID)
def test_valid_arguments_pass(check, args):
    check(*args)


@pytest.mark.parametrize(("check", "args", "error", "message"), INVALID)
def test_invalid_arguments_name_the_argument(check, args, error, message):
    if error is None:
        check(*args)
        return
    with pytest.raises(error) as info:
        check(*args)
    assert message in str(info.value)
    assert f"`{args[0]}`" in str(info.value)


def test_long_values_are_shortened():
    with pytest.raises(ValueError, match=r"\.\.\.$"):
        checks.check_choice("engine", "x" * 500, ("auto",))


@pytest.mark.django_db
def test_check_fields_names_the_model_and_valid_fields():
    from django.contrib.gis.db.models import GeometryField

    from project.buildings.models import Building

    checks.check_fields("fields", Building, ["footprint_m2", "boundary"])
    with pytest.raises(ValueError, match=r"`fields` must be fields of Building \(.*footprint_m2"):
        checks.check_fields("fields", Building, ["hight_m"])
    with pytest.raises(ValueError, match=r"\(boundary\); got 'footprint_m2'"):
        checks.check_fields("geometry_field", Building, ["footprint_m2"], kinds=GeometryField)
