"""docs/review.md lists every endpoint of the review app and its API, with its methods, as routed."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Mount, Route

from gateway.review.app import routes

DOC = (Path(__file__).resolve().parents[2] / "docs" / "review.md").read_text()


def test_every_route_is_documented_with_its_methods():
    missing = []
    for route in routes():
        if isinstance(route, Mount):
            if f"`GET {route.path}/" not in DOC:
                missing.append(route.path)
            continue
        assert isinstance(route, Route)
        for method in sorted(route.methods - {"HEAD"}):
            if f"`{method} {route.path}`" not in DOC:
                missing.append(f"{method} {route.path}")
    assert not missing, f"not in docs/review.md: {missing}"
