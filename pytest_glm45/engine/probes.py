"""HTTP probes of a server, with the standard library only (no heavy imports at start-up).

Each returns what it found and never raises for a server that is down or answers nonsense:
readiness, the listed models, the version, and whether replay is loaded.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pytest_glm45.glm.replay import probe_request, probe_says_loaded


def http_get(url: str, api_key: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET; returns (status, body), status 0 if unreachable."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def http_post_json(url: str, body: dict[str, Any], api_key: str | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """POST JSON; returns (status, parsed JSON or None), status 0 if unreachable."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), int(resp.status)
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), int(exc.code)
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def listed_models(body: bytes) -> list[dict[str, Any]]:
    """The `data` entries of a /v1/models answer; empty for anything that is not one."""
    try:
        data = json.loads(body).get("data", [])
    except (ValueError, AttributeError):
        return []
    return [dict(m) for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def server_version(base_url: str, api_key: str | None = None, timeout: float = 5.0) -> str | None:
    """The version /version reports, or None when it answers anything else (or nothing)."""
    status, body = http_get(base_url + "/version", api_key, timeout=timeout)
    if status != 200:
        return None
    try:
        version = json.loads(body or b"{}").get("version")
    except (ValueError, AttributeError):
        return None
    return str(version) if version else None


def replay_answers(base_url: str, api_key: str | None, model: str, timeout: float = 120.0) -> tuple[bool, str]:
    """(replay is loaded, what the probe saw): the probe's script must come back verbatim."""
    status, body = http_post_json(base_url + "/v1/completions", probe_request(model), api_key, timeout=timeout)
    if status == 0:
        return False, f"no answer to the replay probe within {timeout:.0f} s"
    if status != 200:
        return False, f"the replay probe got HTTP {status}: {str(body)[:300]}"
    if isinstance(body, dict) and probe_says_loaded(body):
        return True, "the probe's script came back verbatim"
    text = body.get("choices", [{}])[0].get("text") if isinstance(body, dict) else body
    return False, f"the replay probe's script did not come back (got {str(text)[:200]!r})"
