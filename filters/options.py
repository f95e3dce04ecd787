"""Validate a filter's own options with pydantic, turning errors into OptionError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from filters.api import OptionError

__all__ = ["FilterOptions", "parse_options"]


class FilterOptions(BaseModel):
    """Base for option models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def parse_options(model: type[M], options: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "?"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        raise OptionError(key, msg) from None
