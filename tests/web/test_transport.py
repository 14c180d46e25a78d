"""Transport security: TLS for HTTP, CORS restricted by configuration, sign-in rate limit."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagebank.config import Settings
from tests.conftest import LiveServer, free_port, wait_until_serving


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagebank-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serve_over_tls_with_hsts(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env["IMAGEBANK_DICOM__PORT"] = str(free_port())  # parallel servers must not share the DICOM port
    env.update(IMAGEBANK_SECURITY__TLS_CERTFILE=str(cert), IMAGEBANK_SECURITY__TLS_KEYFILE=str(key))
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(tmp_path / "d"), "serve", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        response = wait_until_serving(f"https://127.0.0.1:{port}/healthz", proc,
                                      verify=ssl.create_default_context(cafile=str(cert)))
        assert response.status_code == 200
        assert response.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz")  # no plain HTTP on the TLS port
    finally:
        proc.terminate()
        proc.wait(10)


def _app(settings: Settings, secured: Any, **security: Any) -> Any:
    from imagebank.web.app import create_app

    arch, accounts, audit = secured
    tuned = settings.model_copy(update={"security": settings.security.model_copy(update=security)})
    return create_app(tuned, arch, accounts, audit)


def test_cors_allows_only_configured_origins(settings: Settings, secured: Any) -> None:
    app = _app(settings, secured, cors_origins=["https://viewer.example.org"])
    with LiveServer(app) as server:
        preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
        ok = httpx.options(f"{server.url}/api/stats", headers={"Origin": "https://viewer.example.org", **preflight})
        assert ok.headers.get("access-control-allow-origin") == "https://viewer.example.org"
        evil = httpx.options(f"{server.url}/api/stats", headers={"Origin": "https://evil.example.com", **preflight})
        assert "access-control-allow-origin" not in evil.headers
    no_cors = _app(settings, secured)
    with LiveServer(no_cors) as server:
        response = httpx.get(f"{server.url}/healthz", headers={"Origin": "https://viewer.example.org"})
        assert "access-control-allow-origin" not in response.headers


def test_sign_in_is_rate_limited_per_address(settings: Settings, secured: Any) -> None:
    app = _app(settings, secured, login_rate_per_minute=3)
    with LiveServer(app) as server:
        codes = [httpx.post(f"{server.url}/api/login", json={"username": f"u{i}", "password": "x" * 12}).status_code
                 for i in range(4)]
    assert codes == [401, 401, 401, 429]
