"""The control plane of a running `mockex serve --control`: an HTTP/JSON API on loopback (api.py, routes and
operations; service.py, its listener), its OpenAPI document (openapi.py) and the `mockex ctl` client (ctl.py)."""
