"""Schemathesis fuzzes every operation of the OpenAPI schema; nothing may answer 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from imagebank.security.roles import Role


def test_openapi_fuzzing_finds_no_server_error(live_app: Any) -> None:
    server, accounts = live_app
    accounts.create_user("fuzzer", [Role.ADMIN], "fuzzing password 123")
    token = accounts.create_token("fuzzer", "schemathesis")
    st = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [str(st), "run", f"{server.url}/api/openapi.json", "--checks", "not_a_server_error",
         "-H", f"Authorization: Bearer {token}", "--max-examples", "40", "--seed", "1", "--workers", "1"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower()
