"""Validate a filter's own options with pydantic, turning errors into OptionError."""

from __future__ import annotations

import functools
import ipaddress
import types
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from spamgate.filters.sdk.errors import OptionError

__all__ = [
    "FilterOptions", "IPNetwork", "Networks", "client_address", "describe_error", "lists_to_tuples", "parse_options",
]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: Any) -> Any:
    # Host bits are forgiven ("192.0.2.7/24" means 192.0.2.0/24), as in Postfix's mynetworks.
    if isinstance(value, list | tuple):
        return tuple(ipaddress.ip_network(str(v), strict=False) for v in value)
    return value


@functools.lru_cache(maxsize=4096)
def client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address, IPv4-mapped IPv6 as IPv4 (a dual-stack listener must not split a client
    in two); None when it is not an IP address at all. Memoised: clients come back, and parsing
    showed in profiles of every connection."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


Networks = Annotated[tuple[IPNetwork, ...], BeforeValidator(_networks)]
"""A list of CIDRs in config: ``["10.0.0.0/8", "2001:db8::/32"]``."""


def _is_tuple(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is tuple:
        return True
    if origin in (Union, types.UnionType):
        return any(_is_tuple(a) for a in get_args(annotation))
    return False


def lists_to_tuples(model: type[BaseModel], data: Any) -> Any:
    """TOML has arrays, our models have tuples: convert exactly where a tuple is expected.

    This is what makes strict validation possible: pydantic's lax mode would also turn
    ``"32500"`` into 32500 and ``"yes"`` into True, which hides typos in a mail server's config.
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, info in model.model_fields.items():
        if isinstance(out.get(name), list) and _is_tuple(info.annotation):
            out[name] = tuple(out[name])
    return out


_EXPECTED = {
    "int_type": "an integer", "float_type": "a number", "bool_type": "true or false", "string_type": "a string",
    "tuple_type": "a list", "list_type": "a list", "model_type": "a table", "dict_type": "a table",
    "model_attributes_type": "a table",
}


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def describe_error(err: Any) -> str:
    """A pydantic error as an admin reads it: what was expected, and what the file says."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    expected = _EXPECTED.get(kind)
    if expected:
        return f"expected {expected}, got {_got(err.get('input'))}"
    msg = str(err["msg"])
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


class FilterOptions(BaseModel):
    """Base for option models: unknown keys are errors, values are immutable, types are strict.

    Strict means no coercion: ``timeout = "5"`` is an error, not 5.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _arrays(cls, data: Any) -> Any:
        return lists_to_tuples(cls, data)


M = TypeVar("M", bound=BaseModel)


def parse_options(model: type[M], options: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "?"
        msg = "unknown option" if err["type"] == "extra_forbidden" else describe_error(err)
        raise OptionError(key, msg) from None
