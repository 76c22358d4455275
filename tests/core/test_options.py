"""Option checks say what was wrong, with which value, before anything starts."""

from __future__ import annotations

import datetime

import pytest

from daskflow.core.options import check_limits, check_options, positive_seconds
from daskflow.exceptions import FlowDefinitionError


def test_unknown_options_get_a_did_you_mean():
    with pytest.raises(FlowDefinitionError, match=r"'retires' \(did you mean 'retries'\?\)"):
        check_options("@task", ["retires"], ["retries", "name"])


def test_durations():
    assert positive_seconds("10m", "interval", ValueError) == 600
    assert positive_seconds(datetime.timedelta(hours=1), "interval", ValueError) == 3600
    with pytest.raises(ValueError, match="interval='soon' is not a duration"):
        positive_seconds("soon", "interval", ValueError)
    with pytest.raises(ValueError, match="must be positive"):
        positive_seconds(0, "interval", ValueError)


def test_limits():
    assert check_limits("flow 'x'", {"db": 2}) == {"db": 2}
    with pytest.raises(FlowDefinitionError, match="limit of tag 'db' must be an integer"):
        check_limits("flow 'x'", {"db": 0})
