"""The one configuration object, loaded once and passed down.

Sources, later ones winning:

1. built-in defaults (the embedded setup: SQLite + filesystem blobs inside the data folder);
2. a TOML file: ``--config FILE``, ``$IMAGEBANK_CONFIG``, or ``imagebank.toml`` inside the data folder;
3. environment variables ``IMAGEBANK_<SECTION>__<KEY>`` (e.g. ``IMAGEBANK_DATABASE__URL``).

The data folder itself comes from ``--data DIR``, ``$IMAGEBANK_DATA`` or ``./imagebank-data``.
No other module reads the environment.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imagebank.errors import ConfigError

DEFAULT_DATA_DIR = "imagebank-data"
CONFIG_FILE_NAME = "imagebank.toml"
ENV_PREFIX = "IMAGEBANK_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    #: SQLAlchemy URL. Empty means ``sqlite:///<data>/index.sqlite3``.
    url: str = ""
    #: Bring the schema up to date when the archive is opened (embedded default). Operators of a shared
    #: PostgreSQL usually turn this off and run ``imagebank db upgrade`` explicitly.
    auto_upgrade: bool = True
    pool_size: int = Field(default=5, ge=1)


class StorageSettings(_Section):
    #: ``file:///path`` or ``s3://bucket/prefix``. Empty means ``file://<data>/blobs``.
    blob_url: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    #: Leave empty to use boto3's usual credential chain.
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    #: fsync every blob and its directory before the index commit refers to it.
    fsync: bool = True
    #: With fsync: write blobs with O_DIRECT (Linux), past the page cache (see storage.blobs.filesystem).
    direct_io: bool = True


class IngestSettings(_Section):
    #: What to do when an instance arrives whose SOP Instance UID is stored with different bytes.
    duplicate_policy: Literal["reject", "replace"] = "reject"
    #: Refuse instances with an empty Patient ID (type 2 in most IODs, but an archive cannot file them).
    require_patient_id: bool = True
    #: Worker processes for bulk ingest; 0 means one per CPU.
    workers: int = Field(default=0, ge=0)
    #: Values longer than this many bytes are left out of the cached header as BulkDataURIs.
    bulk_data_threshold: int = Field(default=1024, ge=64)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8042, ge=1, le=65535)
    #: HTTP server processes sharing the port (each uses one core); 0 means one per CPU, at most 8.
    processes: int = Field(default=0, ge=0, le=64)


class SecuritySettings(_Section):
    session_hours: float = Field(default=8.0, gt=0)
    #: Failed sign-ins (per account) within ``lockout_window_minutes`` that lock it.
    lockout_failures: int = Field(default=5, ge=1)
    lockout_window_minutes: float = Field(default=15.0, gt=0)
    lockout_minutes: float = Field(default=15.0, gt=0)
    #: Sign-in requests per minute from one network address (rate limit).
    login_rate_per_minute: int = Field(default=20, ge=1)
    #: Key of the audit trail's HMAC chain. Empty means ``<data>/secrets/audit-chain.key`` (created).
    audit_key_file: str = ""
    #: TLS for HTTP: PEM certificate chain and private key. Required to serve beyond loopback.
    tls_certfile: str = ""
    tls_keyfile: str = ""
    #: Set when a TLS-terminating reverse proxy is in front (allows a non-loopback bind without TLS).
    behind_tls_proxy: bool = False
    #: Addresses of reverse proxies whose X-Forwarded-For is believed, so audit records and sign-in
    #: rate limits see the real client address instead of the proxy's.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Origins allowed by CORS (e.g. a viewer served elsewhere); empty = same origin only.
    cors_origins: list[str] = Field(default_factory=list)
    #: OpenID Connect single sign-on (empty issuer = off). The issuer must serve
    #: ``/.well-known/openid-configuration``; register ``<base URL>/login/oidc/callback`` with it.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid email profile"
    #: Roles given to a person signing in through OIDC for the first time; empty = no account is
    #: created and an administrator must create it (default deny).
    oidc_default_roles: list[str] = Field(default_factory=list)


class DicomPeerSettings(_Section):
    ae_title: str = Field(min_length=1, max_length=16)
    #: Address the peer calls from (and is called at, for C-MOVE destinations); empty = any address.
    host: str = ""
    port: int = Field(default=104, ge=1, le=65535)
    #: What the peer may do: archive:read (C-FIND/MOVE/GET), archive:write (C-STORE). Least privilege
    #: by default: a peer may store; reading identified data must be granted explicitly.
    permissions: list[str] = Field(default_factory=lambda: ["archive:write"])
    #: With mutual DICOM TLS (dicom.tls_ca_file): the name (certificate subject CN or DNS SAN) the
    #: peer's client certificate must carry, so a certificate issued to one peer cannot use another's AE title.
    tls_subject: str = ""


class DicomSettings(_Section):
    #: Start the DICOM listener with ``imagebank serve``.
    enabled: bool = True
    ae_title: str = Field(default="IMAGEBANK", min_length=1, max_length=16)
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=1, le=65535)
    #: Unknown calling AE titles are refused unless this is set (then they may echo and store only).
    allow_unknown_peers: bool = False
    peers: list[DicomPeerSettings] = Field(default_factory=list)
    max_associations: int = Field(default=32, ge=1)
    # Maximum Length of a P-DATA PDU we receive (PS3.8 D.1): large PDUs mean far fewer PDUs to decode
    # per image (a 512x512 CT slice is 32 PDUs at the common 16 KiB, 1 at 1 MiB). 0 means unlimited.
    max_pdu_length: int = Field(default=1048576, ge=0)
    # Listener processes sharing the port (SO_REUSEPORT: the kernel spreads associations over them),
    # so parallel associations use every core instead of one interpreter's. 0 means one per CPU, at most 4.
    processes: int = Field(default=0, ge=0, le=64)
    #: DICOM TLS (PS3.15 B.1 secure transport): PEM certificate and key; a CA file makes peers
    #: present a certificate it signed (mutual TLS).
    tls_certfile: str = ""
    tls_keyfile: str = ""
    tls_ca_file: str = ""


class DicomwebSettings(_Section):
    """DICOMweb (PS3.18) under ``/dicom-web``, and the OHIF viewer at ``/viewer``."""

    #: Largest STOW-RS request body; bigger ones are refused with 413 before or while streaming.
    max_request_mb: int = Field(default=4096, ge=1)
    #: Most results one QIDO-RS response holds; a larger ``limit`` is cut to it (with a Warning header).
    max_results: int = Field(default=1000, ge=1, le=100_000)
    #: Instances staged in parallel while a STOW-RS request streams in.
    stow_parallelism: int = Field(default=4, ge=1, le=64)
    #: Where the OHIF viewer's ``dist/`` is installed (``imagebank viewer install``); empty means
    #: ``~/.cache/imagebank/viewer/ohif-<version>``.
    viewer_dir: str = ""


class EhrSettings(_Section):
    """The EHR side (FHIR R4): ingest and identity linkage."""

    #: DICOM Issuer of Patient ID (0010,0021) -> the FHIR identifier system of the same MRNs, so a DICOM
    #: PatientID and a FHIR Patient.identifier name the same person. Key ``""`` covers DICOM patients sent
    #: without an issuer. The defaults are the synthetic demo hospital's; replace them with your own.
    issuer_systems: dict[str, str] = Field(default_factory=lambda: {
        "IBGH": "https://ibgh.example.org/fhir/sid/mrn", "RMC": "https://rmc.example.org/fhir/sid/mrn"})
    #: Resources validated and committed together by file ingest.
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    #: Validation processes for file ingest; 0 means one per CPU.
    workers: int = Field(default=0, ge=0)
    #: Most resources one FHIR search page returns (``_count`` is cut to it).
    max_page_size: int = Field(default=1000, ge=1, le=100_000)
    #: Largest ``POST /fhir`` Bundle accepted.
    max_bundle_mb: int = Field(default=64, ge=1)


class DeidSettings(_Section):
    """De-identification (PS3.15 Annex E) for the research zone, and the linkage vault."""

    #: The linkage vault's database (project keys, pseudonym -> patient). Default DATA/vault/linkage.sqlite3.
    vault_url: str = ""
    #: PS3.15 E.3 options on top of the Basic Profile (names as in imagebank.deid.profile.Option).
    options: list[str] = Field(default_factory=lambda: [
        "retain_modified_dates", "retain_patient_characteristics", "clean_descriptors",
        "clean_structured_content", "clean_graphics", "clean_pixel_data"])
    #: Private attributes known to be safe ("CREATOR:gggg,xxee"), kept with option retain_safe_private.
    safe_private: list[str] = Field(default_factory=list)
    #: Extra burned-in text regions per manufacturer/model (JSON file, same format as the shipped rules).
    pixel_rules_file: str = ""
    #: "auto": use tesseract OCR for images at risk when installed; "off": region rules only.
    ocr: str = Field(default="auto", pattern="^(auto|off)$")
    #: Institution names to scrub from free text (besides what the patient's own record names).
    institutions: list[str] = Field(default_factory=list)
    #: Processes for batch de-identification; 0 means one per CPU.
    workers: int = Field(default=0, ge=0)


class Settings(_Section):
    data_dir: Path
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    ingest: IngestSettings = IngestSettings()
    server: ServerSettings = ServerSettings()
    security: SecuritySettings = SecuritySettings()
    dicom: DicomSettings = DicomSettings()
    dicomweb: DicomwebSettings = DicomwebSettings()
    ehr: EhrSettings = EhrSettings()
    deid: DeidSettings = DeidSettings()

    @property
    def audit_key_path(self) -> Path:
        return Path(self.security.audit_key_file) if self.security.audit_key_file else (
            self.data_dir / "secrets" / "audit-chain.key")

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'index.sqlite3'}"

    @property
    def vault_url(self) -> str:
        return self.deid.vault_url or f"sqlite:///{self.data_dir / 'vault' / 'linkage.sqlite3'}"

    @property
    def blob_url(self) -> str:
        return self.storage.blob_url or (self.data_dir / "blobs").resolve().as_uri()


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``IMAGEBANK_SECTION__KEY=value``; lists and tables (e.g. ``dicom.peers``) are written as JSON."""
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        parsed: Any = value
        if value.lstrip().startswith(("[", "{")):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"{name}: not valid JSON") from None
        overrides.setdefault(section, {})[key] = parsed
    return overrides


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_settings(
    data_dir: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from defaults, the TOML file and the environment.

    Raises :class:`ConfigError` naming the offending setting when anything is invalid.
    """
    env = os.environ if environ is None else environ
    data = Path(data_dir or env.get("IMAGEBANK_DATA") or DEFAULT_DATA_DIR).expanduser().absolute()
    explicit = config_file or env.get("IMAGEBANK_CONFIG")
    path = Path(explicit).expanduser() if explicit else data / CONFIG_FILE_NAME

    raw: dict[str, Any] = {}
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(f"configuration file {path} does not exist")

    raw = _merge(raw, _env_overrides(env))
    raw["data_dir"] = data
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration ({path.name}): {problems}") from None
