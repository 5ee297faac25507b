"""The OpenAPI 3 document of the control API, generated from its route table (api.ROUTES).

    python -m harness.control.openapi > docs/control.openapi.json

tests/test_control.py fails when the committed file is not what this prints.
"""
from __future__ import annotations

import json
from typing import Any, Dict

from harness import __version__
from harness.control.api import ROUTES

ERROR = {"type": "object", "properties": {
    "error": {"type": "string"},
    "errors": {"type": "array", "items": {"type": "object", "properties": {
        "source": {"type": "string"}, "line": {"type": "integer", "nullable": True}, "field": {"type": "string"},
        "message": {"type": "string"}, "hint": {"type": "string"}}}}}}


def document() -> Dict[str, Any]:
    paths: Dict[str, Any] = {}
    for route in ROUTES:
        operation: Dict[str, Any] = {
            "operationId": route.operation,
            "summary": route.summary,
            "responses": {
                "200": {"description": "done", "content": {"application/json": {"schema": route.answer}}},
                "400": {"description": "invalid request or validation errors (the messages of a scenario file)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": {"description": "missing or wrong bearer token (WWW-Authenticate: Bearer)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        if route.query:
            operation["parameters"] = [{"name": q.name, "in": "query", "required": False, "description": q.help,
                                        "schema": {"type": q.kind}} for q in route.query]
        if route.body is not None:
            operation["requestBody"] = {"required": False,
                                        "content": {"application/json": {"schema": route.body}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "mockex control API", "version": __version__,
                 "description": "Started by `mockex serve --control` on a loopback address; its URL and bearer "
                                "token are in endpoints.json under `control`. See docs/control.md."},
        "servers": [{"url": "http://127.0.0.1:{port}", "variables": {"port": {"default": "0"}}}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Error": ERROR}},
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
