"""``spamgate.filters.sdk.api`` stays the one import path for the whole filter contract.

The contract's types live in ``verdict``, ``context`` and ``protocols``; plugins import them
from ``api`` (or the ``sdk`` package), so a name added to a part but not re-exported would
break them only at their import time.
"""

from __future__ import annotations

import types

import pytest

import spamgate.filters.sdk as sdk
from spamgate.filters.sdk import api, context, protocols, verdict


@pytest.mark.parametrize("part", [verdict, context, protocols], ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_api_re_exports_every_public_name_of_its_parts(part: types.ModuleType) -> None:
    assert set(part.__all__) <= set(api.__all__)
    for name in part.__all__:
        assert getattr(api, name) is getattr(part, name), name


def test_api_all_names_resolve_and_the_package_hands_out_the_same_objects() -> None:
    ns: dict[str, object] = {}
    exec("from spamgate.filters.sdk.api import *", ns)
    assert set(api.__all__) <= ns.keys()
    shared = set(api.__all__) & set(sdk.__all__)
    assert {"Context", "Filter", "FilterEnv", "Phase", "Reply", "Symbol", "Verdict"} <= shared
    for name in shared:
        assert getattr(sdk, name) is getattr(api, name), name
