"""Validate a filter's own options with pydantic, turning errors into OptionError."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from filters.api import OptionError

__all__ = ["FilterOptions", "IPNetwork", "Networks", "parse_options"]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: Any) -> Any:
    # Host bits are forgiven ("192.0.2.7/24" means 192.0.2.0/24), as in Postfix's mynetworks.
    if isinstance(value, list | tuple):
        return tuple(ipaddress.ip_network(str(v), strict=False) for v in value)
    return value


Networks = Annotated[tuple[IPNetwork, ...], BeforeValidator(_networks)]
"""A list of CIDRs in config: ``["10.0.0.0/8", "2001:db8::/32"]``."""


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
