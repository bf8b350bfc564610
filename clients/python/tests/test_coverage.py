"""The client covers the API: every operation of the live server's OpenAPI document is a
method of both clients, at the method and path the document gives it. A route added to the
server without client support fails here."""

from __future__ import annotations

from typing import Any

import pytest

import mistersmith
from mistersmith import AsyncClient, Client

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def documented(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """``operationId`` → (METHOD, path) of every operation in an OpenAPI document."""
    found: dict[str, tuple[str, str]] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                key = op.get("operationId") or f"{method.upper()} {path}"
                assert key not in found, f"operationId {key} is used twice"
                found[key] = (method.upper(), path)
    return found


@pytest.fixture(scope="module")
def operations(smith: object) -> dict[str, tuple[str, str]]:
    with smith.client() as c:  # type: ignore[attr-defined]
        return documented(c.openapi())


def test_every_operation_has_a_route(operations: dict[str, tuple[str, str]]) -> None:
    offered = set(operations) - set(mistersmith.NOT_OFFERED)
    missing = sorted(offered - set(mistersmith.ROUTES))
    assert not missing, f"operations of GET /v1/openapi.json the client lacks: {missing}"
    stale = sorted(set(mistersmith.ROUTES) - set(operations))
    assert not stale, f"client operations the server no longer documents: {stale}"
    for op, route in mistersmith.ROUTES.items():
        assert operations[op] == route, f"{op}: the client sends {route}, the document says {operations[op]}"


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_every_operation_is_a_method(operations: dict[str, tuple[str, str]], cls: type) -> None:
    methods = mistersmith.operations(cls)
    missing = sorted(set(operations) - set(mistersmith.NOT_OFFERED) - set(methods))
    assert not missing, f"{cls.__name__} has no method for {missing}"
    assert set(methods) == set(mistersmith.ROUTES)


def test_what_is_not_offered_is_still_not_offered(smith: object) -> None:
    """``GET /mcp`` is left out because it only ever answers 405: should the server start
    serving it, this fails and the client must follow."""
    with smith.client() as c:  # type: ignore[attr-defined]
        document = c.openapi()
    op = document["paths"]["/mcp"]["get"]
    assert op["operationId"] in mistersmith.NOT_OFFERED
    assert not [s for s in op["responses"] if s.startswith("2")], op["responses"]
