"""Compiled dependency filters read events as Argo Events does: a filter's shortcut gives the regex's verdict."""

from __future__ import annotations

import itertools
import re

import pytest

from ctloop.sensors.filters import data_filter_passes
from ctloop.sensors.spec import DataFilter

HAS_VALUE = DataFilter("body.uri", "string", ("^.+$",))
TEXTS = ["".join(chars) for n in range(5) for chars in itertools.product("a\n\r ", repeat=n)]


@pytest.mark.parametrize("text", TEXTS)
def test_a_has_a_value_filter_passes_exactly_the_texts_its_regex_finds(text):
    expected = re.search("^.+$", text) is not None
    assert data_filter_passes(HAS_VALUE, {"body": {"uri": text}}) is expected


@pytest.mark.parametrize(("value", "passes"), [(None, False), (0, True), (1.5, True), ([], True), ({}, True),
                                               (True, True)])
def test_a_has_a_value_filter_reads_a_non_string_as_gjson_text(value, passes):
    assert data_filter_passes(HAS_VALUE, {"body": {"uri": value}}) is passes


def test_a_has_a_value_filter_fails_a_missing_path():
    assert not data_filter_passes(HAS_VALUE, {"body": {}})
    assert not data_filter_passes(HAS_VALUE, {"body": "text"})


@pytest.mark.parametrize("comparator", ["=", "!="])
@pytest.mark.parametrize("values", [("^ctloop\\.data\\.arrived$",), ("^a", "b$")])
def test_a_string_filter_remembers_verdicts_without_changing_them(comparator, values):
    f = DataFilter("body.type", "string", values, comparator=comparator)
    for text in ["ctloop.data.arrived", "ab", "a", "b", "", "xb", "ctloop.data.arrived"] * 2:
        found = [re.search(v, text) is not None for v in values]
        expected = any(found) if comparator == "=" else not all(found)
        assert data_filter_passes(f, {"body": {"type": text}}) is expected
