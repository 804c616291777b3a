"""The capability tags: every registered method answers, truthfully for the offset claim."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import dehub
from dehub.methods import METHODS, MethodTags, get_tags


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_answers(name):
    cls = METHODS[name]
    tags = get_tags(cls)
    assert isinstance(tags, MethodTags)
    assert get_tags(cls()) == tags
    with pytest.raises(dataclasses.FrozenInstanceError):
        tags.offset = not tags.offset  # type: ignore[misc]


def test_tags_follow_parameters():
    assert get_tags(dehub.QBNorm()).offset
    assert not get_tags(dehub.QBNorm(dynamic=True)).offset
    assert not get_tags(METHODS["qbnorm_dis"]).offset
    assert not get_tags(METHODS["dbnorm_dis"]).offset


def test_non_methods_are_refused():
    with pytest.raises(TypeError, match="not a dehub method"):
        get_tags(object())
    with pytest.raises(TypeError, match="not a dehub method"):
        get_tags(np.ndarray)


def test_public_names():
    assert dehub.get_tags is get_tags and dehub.MethodTags is MethodTags
    assert {"get_tags", "MethodTags"} <= set(dehub.__all__)
