"""The ``imagebank`` command.

Every subcommand loads the one configuration (``--data``/``--config``/environment), opens what it
needs through :mod:`imagebank.context`, and turns :class:`~imagebank.errors.ImagebankError` (and an
unreachable database) into a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from imagebank import __version__
from imagebank.config import Settings, load_settings
from imagebank.dicom import quiet_pydicom
from imagebank.errors import ConfigError, ImagebankError

F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return func(*args, **kwargs)
        except ImagebankError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OperationalError as exc:
            click.echo(f"error: the index database is not reachable: {exc.orig}", err=True)
            sys.exit(2)
    return wrapper  # type: ignore[return-value]


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    if "settings" not in obj:
        obj["settings"] = load_settings(obj["data"], obj["config"])
    return obj["settings"]  # type: ignore[no-any-return]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data", type=click.Path(file_okay=False), envvar="IMAGEBANK_DATA",
              help="Data folder (index, blobs, imagebank.toml). Default: ./imagebank-data")
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="IMAGEBANK_CONFIG",
              help="Configuration file (TOML). Default: DATA/imagebank.toml if present.")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.version_option(__version__, prog_name="imagebank")
@click.pass_context
def main(ctx: click.Context, data: str | None, config: str | None, verbose: int) -> None:
    """Imagebank: medical image archive, research warehouse and patient sharing."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_pydicom()
    ctx.obj = {"data": data, "config": config}


@main.command()
@click.option("--host", help="Address to bind (default 127.0.0.1). Beyond loopback, TLS is required.")
@click.option("--port", type=int, help="HTTP port (default 8042).")
@click.pass_context
@_friendly_errors
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the web pages and HTTP API of the archive (sign-in required)."""
    import secrets

    from imagebank.accept import NOT_LISTENING, AcceptTurn, wait_for_helpers
    from imagebank.context import open_archive, open_security
    from imagebank.runtime import tune_server_process
    from imagebank.security.roles import Role
    from imagebank.supervision import Helpers
    from imagebank.web.app import create_app, is_loopback
    from imagebank.web.server import http_processes, listen, run_http_process, serve_http

    settings = _settings(ctx)
    host = host or settings.server.host
    port = port or settings.server.port
    sec = settings.security
    if not is_loopback(host) and not sec.tls_certfile and not sec.behind_tls_proxy:
        raise ImagebankError(
            f"refusing to serve plain HTTP on {host}: identified health data needs TLS beyond loopback. "
            "Set security.tls_certfile and security.tls_keyfile, or security.behind_tls_proxy = true.")
    try:
        http_socket = listen(host, port)
    except OSError as exc:
        raise ImagebankError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror or exc} "
                             "(set server.port or use --port)") from None
    archive = open_archive(settings)
    accounts, audit = open_security(settings, archive.index.engine)
    app = create_app(settings, archive, accounts, audit)
    scheme = "https" if sec.tls_certfile else "http"
    click.echo(f"Imagebank {__version__} serving {settings.data_dir}")
    audit.record(_configuration_event(settings))
    if accounts.count_users() == 0:
        password = secrets.token_urlsafe(12)
        accounts.create_user("admin", [Role.ADMIN, Role.RADIOLOGIST], password, display_name="Administrator")
        click.echo("  first start: created user 'admin' with password  " + password)
        click.echo("  (shown once; change it with: imagebank users passwd admin)")
    click.echo(f"  open {scheme}://{host}:{port}/")
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    listener = None
    helpers: list[Helpers] = []  # one group per kind of helper process, stopped in the end
    if settings.dicom.enabled:
        from imagebank.dimse.scp import (
            DicomListener,
            SharedListener,
            listener_processes,
            run_listener_process,
        )

        processes = listener_processes(settings.dicom)
        loads = spawn.Array("i", [0] + [NOT_LISTENING] * (processes - 1), lock=False)  # associations per process
        listener = DicomListener(settings.dicom, archive, audit)
        try:
            listener.start(share=SharedListener(loads, 0) if processes > 1 else None)
        except OSError as exc:
            raise ImagebankError(f"cannot listen for DICOM on {settings.dicom.host}:{settings.dicom.port}: "
                                 f"{exc.strerror or exc} (set dicom.port, or dicom.enabled = false)") from None
        if processes > 1:
            pinned = settings.model_copy(update={"dicom": settings.dicom.model_copy(update={"port": listener.port})})
            shared_socket = listener.listening_socket
            helpers.append(Helpers("DICOM listener", loads, range(1, processes), lambda n: spawn.Process(
                target=run_listener_process, name=f"dicom-listener-{n}", daemon=True,
                args=(pinned, os.getpid(), SharedListener(loads, n, shared_socket)))))
            helpers[-1].start()
            wait_for_helpers(loads, helpers[-1].running)  # an association stays with its process for its whole life
        tls_note = " (TLS)" if settings.dicom.tls_certfile else ""
        click.echo(f"  DICOM listener {settings.dicom.ae_title} on {settings.dicom.host}:{listener.port}{tls_note}; "
                   f"{len(settings.dicom.peers)} known peer(s); {processes} process(es)")
    http_count = http_processes(settings)
    # Open connections per process; NOT_LISTENING until it serves (the first one too: it waits for the others).
    connections = spawn.Array("i", [NOT_LISTENING] * http_count, lock=False)
    turns = [AcceptTurn(connections, n) if http_count > 1 else None for n in range(http_count)]
    http_helpers = Helpers("HTTP", connections, range(1, http_count), lambda n: spawn.Process(
        target=run_http_process, name=f"http-{n}", daemon=True,
        args=(settings, os.getpid(), http_socket, logging.getLogger().level, turns[n])))
    # uvicorn answers SIGTERM by shutting down, then raises it again under the previous handler: make that
    # an exit through the cleanup below instead of the default instant death (which left the DICOM and
    # HTTP processes on their ports). Set before the HTTP processes start: they serve as soon as they can.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        helpers.append(http_helpers)
        http_helpers.start()
        # (measured without: a fresh server's first 300 CT slices over STOW-RS at 230/s, not 370-480)
        wait_for_helpers(connections, http_helpers.running)
        click.echo(f"  HTTP: {len(http_helpers.running) + 1} process(es)")
        sys.stdout.flush()
        tune_server_process()
        serve_http(app, settings, http_socket, turns[0])
    finally:
        if listener is not None:
            listener.stop()
        for group in helpers:
            group.stop()


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--workers", type=int, help="Worker processes (default: one per CPU).")
@click.option("--policy", type=click.Choice(["reject", "replace"]),
              help="When a SOP Instance UID is already stored with different content.")
@click.option("--restart", is_flag=True, help="Ignore the journal of earlier runs over the same source.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
@_friendly_errors
def ingest(ctx: click.Context, paths: tuple[str, ...], workers: int | None, policy: str | None,
           restart: bool, no_progress: bool) -> None:
    """Ingest DICOM files from folders, zip files, DICOMDIRs or single files.

    Resumable: running the same command again skips what an interrupted run already committed.
    """
    from imagebank.archive.bulk import bulk_ingest
    from imagebank.archive.sources import iter_source, job_key_for
    from imagebank.context import open_archive

    settings = _settings(ctx)
    if policy:
        settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"duplicate_policy": policy})})
    archive = open_archive(settings)
    failed = False
    for path in paths:
        click.echo(f"ingesting {path}")
        # Two passes over the listing (one to size the progress bar) instead of holding it: memory
        # stays flat however many files the source has.
        total = sum(1 for _ in iter_source(path))
        summary = bulk_ingest(archive, settings, iter_source(path), job_key=job_key_for(path),
                              resume=not restart, workers=workers, total=total, progress=not no_progress)
        click.echo(summary.render())
        _audit_import(ctx, archive, summary, source=str(path))
        failed = failed or summary.counts["rejected"] > 0
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--patients", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--metadata-only", is_flag=True, help="No pixel data, one instance per series: for scale tests.")
@click.option("--out", type=click.Path(file_okay=False), help="Write PS3.10 files here instead of ingesting.")
@click.option("--workers", type=int, help="Worker processes (default: one per CPU).")
@click.option("--ehr/--no-ehr", "with_ehr", default=True, show_default=True,
              help="Also generate and load the patients' EHR (FHIR R4).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
@_friendly_errors
def demo(ctx: click.Context, patients: int, seed: int, metadata_only: bool, out: str | None,
         workers: int | None, with_ehr: bool, no_progress: bool) -> None:
    """Generate a synthetic hospital (deterministic per seed) with its EHR, and ingest it."""
    from imagebank.synth.hospital import HospitalSpec, count_instances, iter_items, write_folder

    spec = HospitalSpec(seed=seed, patients=patients, metadata_only=metadata_only)
    if out:
        n = write_folder(spec, out)
        click.echo(f"wrote {n} instances of {patients} patients to {out}")
        return
    from imagebank.archive.bulk import bulk_ingest
    from imagebank.context import open_archive

    settings = _settings(ctx)
    archive = open_archive(settings)
    total = count_instances(spec) if patients <= 20000 else None
    click.echo(f"generating {patients} synthetic patients (seed {seed}"
               f"{', metadata only' if metadata_only else ''}) into {settings.data_dir}")
    summary = bulk_ingest(archive, settings, iter_items(spec), job_key=f"demo:{spec.container}",
                          workers=workers, total=total, progress=not no_progress, origin="demo")
    click.echo(summary.render())
    _audit_import(ctx, archive, summary, source=f"synthetic hospital seed {seed}")
    if with_ehr:
        _demo_ehr(settings, archive, seed, patients, no_progress)
    stats = archive.index.stats()
    click.echo(f"archive now holds {stats['patients']} patients, {stats['studies']} studies, "
               f"{stats['instances']} instances")
    data_arg = "" if settings.data_dir == Path("imagebank-data").absolute() else f" --data {settings.data_dir}"
    click.echo(f"look at it:  imagebank{data_arg} serve   then open http://{settings.server.host}:{settings.server.port}/")


def _demo_ehr(settings: Settings, archive: Any, seed: int, patients: int, no_progress: bool) -> None:
    """The synthetic patients' EHR, written as Bulk Data NDJSON under the data folder and loaded."""
    from tqdm import tqdm

    from imagebank.context import open_ehr
    from imagebank.ehr.ingest import EhrIngest, list_sources
    from imagebank.synth.ehr import write_ndjson

    folder = settings.data_dir / "ehr-demo" / f"seed-{seed}-patients-{patients}"
    if not (folder / "Patient.ndjson").is_file():
        write_ndjson(folder, seed, patients)
    files = list_sources(folder)
    click.echo(f"loading the synthetic EHR (FHIR R4 NDJSON in {folder})")
    with tqdm(unit="res", disable=no_progress, delay=0.5) as bar:
        summary = EhrIngest(open_ehr(settings, archive.index.engine), batch_size=settings.ehr.batch_size,
                            workers=settings.ehr.workers, progress=bar.update).run(files)
    click.echo(summary.render())


def _audit_import(ctx: click.Context, archive: Any, summary: Any, source: str) -> None:
    """One DICOM "Import" audit event (DCM 110107) per bulk run, by the operating-system user."""
    _audit_cli(ctx, "110107", "C", {k: int(v) for k, v in summary.counts.items()},
               outcome=0 if not summary.counts["rejected"] else 4, engine=archive.index.engine,
               object_type="import", object_id=source[:256])


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@_friendly_errors
def stats(ctx: click.Context, as_json: bool) -> None:
    """Counts of patients, studies, series, instances and bytes in the archive."""
    from imagebank.context import open_archive

    settings = _settings(ctx)
    figures = open_archive(settings).index.stats()
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(f"data folder: {settings.data_dir}")
    click.echo(f"index: {settings.database_url.split('@')[-1]}   blobs: {settings.blob_url}")
    for key in ("patients", "studies", "series", "instances"):
        click.echo(f"{key:>10}: {figures[key]}")
    click.echo(f"{'stored':>10}: {figures['bytes'] / 1e6:.1f} MB")
    for modality, n in figures["by_modality"].items():
        click.echo(f"{modality:>10}: {n['series']} series, {n['instances']} instances")
    for action, n in figures["conflicts"].items():
        click.echo(f"{action:>10}: {n} (duplicate SOP Instance UIDs with different content)")


@main.command()
@click.option("--repair", is_flag=True, help="Remove orphan blobs older than --grace and fix computed counts.")
@click.option("--grace", type=float, default=3600.0, show_default=True,
              help="Seconds an orphan blob is left alone (an ingest may be about to commit it).")
@click.pass_context
@_friendly_errors
def check(ctx: click.Context, repair: bool, grace: float) -> None:
    """Check the index against the blob store (after a crash, a restore, a migration...)."""
    from imagebank.archive.consistency import check_archive
    from imagebank.context import open_archive

    report = check_archive(open_archive(_settings(ctx)), repair=repair, grace_seconds=grace)
    click.echo(report.render())
    sys.exit(0 if report.ok or repair else 1)


def _configuration_event(settings: Settings) -> Any:
    """Application start (DCM 110100) with a digest of the effective configuration, so any change of
    policy (peers, roles of SSO users, TLS, CORS...) between two starts is visible in the audit trail.
    Secrets are digested, never written out."""
    import hashlib

    from imagebank.security.audit import AuditEvent

    effective = settings.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(effective, sort_keys=True).encode()).hexdigest()
    peers = [p["ae_title"] for p in effective["dicom"]["peers"]]
    return AuditEvent("110100", "E", 0, user_name="system", object_type="configuration", object_id=digest,
                      detail={"action": "start", "version": __version__, "dicom_peers": peers,
                              "oidc": bool(settings.security.oidc_issuer), "tls": bool(settings.security.tls_certfile)})


def _security(ctx: click.Context) -> tuple[Any, Any]:
    from imagebank.context import open_engine, open_security

    settings = _settings(ctx)
    return open_security(settings, open_engine(settings))


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("password", hide_input=True, confirmation_prompt=True))


@main.group()
def users() -> None:
    """User accounts and roles."""


@users.command("add")
@click.argument("username")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["admin", "clinician", "radiologist", "researcher", "honest_broker", "patient",
                                 "service"]), help="Repeat for several roles.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--no-password", is_flag=True, help="No password (single sign-on or API tokens only).")
@click.option("--patient", "patients", multiple=True, help="For patient accounts: PatientID@Issuer they own.")
@click.pass_context
@_friendly_errors
def users_add(ctx: click.Context, username: str, roles: tuple[str, ...], password_stdin: bool, no_password: bool,
              patients: tuple[str, ...]) -> None:
    """Create a user."""
    accounts, audit = _security(ctx)
    password = None if no_password else _read_password(password_stdin)
    user = accounts.create_user(username, roles, password, patient_links=patients)
    from imagebank.security.audit import AuditEvent

    audit.record(AuditEvent("110100", "C", user_name="cli", object_type="user", object_id=username,
                            detail={"roles": sorted(user.roles)}))
    click.echo(f"created {username} ({', '.join(sorted(user.roles))})")


@users.command("list")
@click.pass_context
@_friendly_errors
def users_list(ctx: click.Context) -> None:
    """List users and their roles."""
    accounts, _ = _security(ctx)
    for user in accounts.list_users():
        state = " (disabled)" if user.disabled else ""
        click.echo(f"{user.username:<24} {', '.join(sorted(user.roles))}{state}")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True)
@click.pass_context
@_friendly_errors
def users_passwd(ctx: click.Context, username: str, password_stdin: bool) -> None:
    """Set a user's password."""
    accounts, audit = _security(ctx)
    accounts.set_password(username, _read_password(password_stdin))
    from imagebank.security.audit import AuditEvent

    audit.record(AuditEvent("110100", "U", user_name="cli", object_type="user", object_id=username,
                            detail={"action": "password changed"}))
    click.echo(f"password of {username} changed")


@users.command("disable")
@click.argument("username")
@click.option("--enable", is_flag=True, help="Enable again instead.")
@click.pass_context
@_friendly_errors
def users_disable(ctx: click.Context, username: str, enable: bool) -> None:
    """Disable a user (ends their sessions) or enable them again."""
    accounts, audit = _security(ctx)
    accounts.get_user(username)
    accounts.set_disabled(username, not enable)
    from imagebank.security.audit import AuditEvent

    audit.record(AuditEvent("110100", "U", user_name="cli", object_type="user", object_id=username,
                            detail={"action": "enabled" if enable else "disabled"}))
    click.echo(f"{username} {'enabled' if enable else 'disabled'}")


@main.group()
def tokens() -> None:
    """API tokens for machine clients and scripts."""


@tokens.command("create")
@click.argument("username")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, help="Limit to these permissions (e.g. archive:read).")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.pass_context
@_friendly_errors
def tokens_create(ctx: click.Context, username: str, name: str, scopes: tuple[str, ...], days: int) -> None:
    """Create an API token for USERNAME; it is printed once and stored only as a hash."""
    import datetime as dt

    from imagebank.security.audit import AuditEvent
    from imagebank.security.roles import Permission

    valid = {p.value for p in Permission}
    for scope in scopes:
        if scope not in valid:
            raise ImagebankError(f"unknown scope {scope!r}; choose from {', '.join(sorted(valid))}")
    accounts, audit = _security(ctx)
    token = accounts.create_token(username, name, scopes=scopes, lifetime=dt.timedelta(days=days))
    audit.record(AuditEvent("110100", "C", user_name="cli", object_type="token", object_id=f"{username}/{name}",
                            detail={"scopes": list(scopes), "days": days}))
    click.echo(token)


@tokens.command("revoke")
@click.argument("username")
@click.argument("name")
@click.pass_context
@_friendly_errors
def tokens_revoke(ctx: click.Context, username: str, name: str) -> None:
    """Revoke USERNAME's token NAME."""
    from imagebank.security.audit import AuditEvent

    accounts, audit = _security(ctx)
    n = accounts.revoke_token(name, username)
    audit.record(AuditEvent("110100", "D", user_name="cli", object_type="token", object_id=f"{username}/{name}"))
    click.echo(f"revoked {n} token(s)")


@main.group()
def audit() -> None:
    """The audit trail: verify, query, export."""


@audit.command("verify")
@click.pass_context
@_friendly_errors
def audit_verify(ctx: click.Context) -> None:
    """Check the hash chain: detects modified, deleted and truncated records."""
    from imagebank.security.audit import AuditEvent

    _, trail = _security(ctx)
    problems = trail.verify()
    trail.record(AuditEvent("110101", "E", 0 if not problems else 8, user_name="cli",
                            detail={"action": "verify", "problems": len(problems)}))
    for problem in problems:
        click.echo(f"TAMPERED: {problem}")
    click.echo("audit trail intact" if not problems else f"{len(problems)} problem(s) found")
    sys.exit(1 if problems else 0)


@audit.command("query")
@click.option("--patient", help="PatientID@Issuer")
@click.option("--user")
@click.option("--since", type=click.DateTime())
@click.option("--until", type=click.DateTime())
@click.option("--format", "fmt", type=click.Choice(["text", "dicom", "fhir"]), default="text", show_default=True)
@click.option("--limit", type=int, default=1000, show_default=True)
@click.pass_context
@_friendly_errors
def audit_query(ctx: click.Context, patient: str | None, user: str | None, since: Any, until: Any, fmt: str,
                limit: int) -> None:
    """List audit events (text), or export them as DICOM audit XML or FHIR AuditEvent (NDJSON)."""
    import datetime as dt

    from imagebank.security.audit import EVENT_NAMES, AuditEvent, to_dicom_xml, to_fhir

    _, trail = _security(ctx)

    def utc(value: Any) -> Any:
        return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value

    events = trail.query(patient_id=patient, user_name=user, since=utc(since), until=utc(until), limit=limit)
    trail.record(AuditEvent("110101", "R", user_name="cli", patient_id=patient,
                            detail={"query": {"user": user, "since": str(since), "until": str(until)}}))
    for ev in events:
        if fmt == "dicom":
            click.echo(to_dicom_xml(ev))
        elif fmt == "fhir":
            click.echo(json.dumps(to_fhir(ev)))
        else:
            click.echo(f"{ev.seq:>6} {ev.at.isoformat(timespec='seconds')} {EVENT_NAMES.get(ev.event_id, ev.event_id):<26}"
                       f" {ev.event_action} outcome={ev.outcome} user={ev.user_name} from={ev.network_address}"
                       f" patient={ev.patient_id or '-'} {ev.object_type or ''} {ev.object_id or ''}")


@main.group()
def remote() -> None:
    """Talk to a remote DICOM archive (a [[dicom.peers]] entry with host and port)."""


def _keys(pairs: tuple[str, ...]) -> dict[str, str]:
    from pydicom.datadict import tag_for_keyword

    keys = {}
    for pair in pairs:
        keyword, _, value = pair.partition("=")
        if tag_for_keyword(keyword.strip()) is None:
            raise ImagebankError(f"-k {pair}: {keyword.strip()!r} is not a DICOM keyword")
        keys[keyword.strip()] = value.strip()
    return keys


def _peer(ctx: click.Context, name: str) -> tuple[Settings, Any]:
    from imagebank.dimse.scu import remote_peer

    settings = _settings(ctx)
    return settings, remote_peer(settings.dicom, name)


@remote.command("echo")
@click.argument("peer")
@click.pass_context
@_friendly_errors
def remote_echo(ctx: click.Context, peer: str) -> None:
    """C-ECHO the remote AE PEER."""
    from imagebank.dimse.scu import echo

    settings, target = _peer(ctx, peer)
    status = echo(settings.dicom, target)
    click.echo(f"{target.ae_title} at {target.host}:{target.port}: C-ECHO status 0x{status:04X}")
    sys.exit(0 if status == 0 else 1)


@remote.command("find")
@click.argument("peer")
@click.option("--level", type=click.Choice(["PATIENT", "STUDY", "SERIES", "IMAGE"]), default="STUDY", show_default=True)
@click.option("--root", type=click.Choice(["STUDY", "PATIENT"]), default="STUDY", show_default=True)
@click.option("-k", "keys", multiple=True, help="Keyword=Value to match, or Keyword= to return (repeat).")
@click.pass_context
@_friendly_errors
def remote_find(ctx: click.Context, peer: str, level: str, root: str, keys: tuple[str, ...]) -> None:
    """C-FIND on PEER; prints one JSON object per match (DICOM JSON)."""
    from imagebank.dimse.scu import find
    from imagebank.security.audit import AuditEvent

    settings, target = _peer(ctx, peer)
    identifier = {"StudyInstanceUID": "", "PatientID": "", "StudyDate": "", "ModalitiesInStudy": ""} \
        if level == "STUDY" and not keys else _keys(keys)
    matches = find(settings.dicom, target, level, identifier, root)
    _, trail = _security(ctx)
    trail.record(AuditEvent("110112", "E", 0, user_name="cli", patient_id=identifier.get("PatientID") or None,
                            object_type="remote-query", object_id=target.ae_title, detail={"matches": len(matches)}))
    for ds in matches:
        click.echo(json.dumps(ds.to_json_dict()))


@remote.command("store")
@click.argument("peer")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.pass_context
@_friendly_errors
def remote_store(ctx: click.Context, peer: str, paths: tuple[str, ...]) -> None:
    """C-STORE files (or folders of files) to PEER."""
    from tqdm import tqdm

    from imagebank.dimse.scu import store

    settings, target = _peer(ctx, peer)
    files = sorted(f for p in map(Path, paths) for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    with tqdm(total=len(files), unit="file", delay=0.5) as bar:
        summary = store(settings.dicom, target, files, progress=bar.update)
    click.echo(f"sent {summary.counts['sent']}, failed {summary.counts['failed']}")
    for failure in summary.failures[:20]:
        click.echo(f"  {failure}")
    sys.exit(1 if summary.counts["failed"] else 0)


@remote.command("get")
@click.argument("peer")
@click.option("--level", type=click.Choice(["PATIENT", "STUDY", "SERIES", "IMAGE"]), default="STUDY", show_default=True)
@click.option("--root", type=click.Choice(["STUDY", "PATIENT"]), default="STUDY", show_default=True)
@click.option("-k", "keys", multiple=True, required=True, help="Unique key(s), e.g. -k StudyInstanceUID=1.2.3")
@click.pass_context
@_friendly_errors
def remote_get(ctx: click.Context, peer: str, level: str, root: str, keys: tuple[str, ...]) -> None:
    """Import from PEER by C-GET (e.g. a patient's prior studies) through the ingest pipeline."""
    from imagebank.context import open_archive
    from imagebank.dimse.scu import get_into_archive
    from imagebank.security.audit import AuditEvent

    settings, target = _peer(ctx, peer)
    archive = open_archive(settings)
    summary = get_into_archive(settings.dicom, target, archive, level, _keys(keys), root)
    _, trail = _security(ctx)
    trail.record(AuditEvent("110107", "C", 0 if not summary.counts["failed"] else 4, user_name="cli",
                            object_type="remote-import", object_id=target.ae_title, detail=summary.counts))
    click.echo(f"stored {summary.counts['stored']}, duplicates {summary.counts['duplicate']}, "
               f"failed {summary.counts['failed']}")
    for failure in summary.failures[:20]:
        click.echo(f"  {failure}")
    sys.exit(1 if summary.counts["failed"] else 0)


@remote.command("move")
@click.argument("peer")
@click.option("--level", type=click.Choice(["PATIENT", "STUDY", "SERIES", "IMAGE"]), default="STUDY", show_default=True)
@click.option("--root", type=click.Choice(["STUDY", "PATIENT"]), default="STUDY", show_default=True)
@click.option("--destination", help="AE title to move to (default: this archive's own AE title).")
@click.option("-k", "keys", multiple=True, required=True, help="Unique key(s), e.g. -k StudyInstanceUID=1.2.3")
@click.pass_context
@_friendly_errors
def remote_move(ctx: click.Context, peer: str, level: str, root: str, destination: str | None,
                keys: tuple[str, ...]) -> None:
    """C-MOVE from PEER to DESTINATION (by default into this archive).

    Moving into this archive needs its DICOM listener: the one of a running `imagebank serve`, or, when
    its port is free, one started here for the duration of the move.
    """
    from tqdm import tqdm

    from imagebank.dimse.scu import move

    settings, target = _peer(ctx, peer)
    to = destination or settings.dicom.ae_title
    with _own_listener(ctx, needed=to == settings.dicom.ae_title), tqdm(unit="instance", delay=0.5) as bar:
        result = move(settings.dicom, target, level, _keys(keys), to, root, progress=bar.update)
    click.echo(f"moved to {to}: completed {result.completed}, warning {result.warning}, failed {result.failed} "
               f"(status 0x{result.status:04X})")
    for uid in result.failed_uids[:20]:
        click.echo(f"  failed: {uid}")
    sys.exit(1 if result.failed or result.status not in (0x0000, 0xB000) else 0)


@remote.command("import")
@click.argument("peer")
@click.option("--patient-id", "patient_id", help="PatientID whose studies to import.")
@click.option("--issuer", help="IssuerOfPatientID qualifying --patient-id.")
@click.option("--accession", help="AccessionNumber of the study to import.")
@click.option("--study", "study_uid", help="StudyInstanceUID of the study to import.")
@click.option("--study-date", help="StudyDate or range, e.g. 20150101-20201231 or -20201231.")
@click.option("--modality", help="Only studies with this modality (ModalitiesInStudy).")
@click.option("--method", type=click.Choice(["get", "move"]), default="get", show_default=True,
              help="C-GET on our association, or C-MOVE to our AE title (the peer must know our address).")
@click.pass_context
@_friendly_errors
def remote_import(ctx: click.Context, peer: str, patient_id: str | None, issuer: str | None, accession: str | None,
                  study_uid: str | None, study_date: str | None, modality: str | None, method: str) -> None:
    """Import a patient's (prior) studies from PEER: only what is not here yet is retrieved, so an
    interrupted import resumes when run again."""
    from tqdm import tqdm

    from imagebank.context import open_archive
    from imagebank.dimse.importer import import_studies
    from imagebank.security.audit import AuditEvent

    settings, target = _peer(ctx, peer)
    selection = {k: v for k, v in {"PatientID": patient_id, "IssuerOfPatientID": issuer, "AccessionNumber": accession,
                                   "StudyInstanceUID": study_uid, "StudyDate": study_date,
                                   "ModalitiesInStudy": modality}.items() if v}
    archive = open_archive(settings)
    with _own_listener(ctx, needed=method == "move"), tqdm(unit="instance", delay=0.5) as bar:
        report = import_studies(settings.dicom, target, archive, selection, method,  # type: ignore[arg-type]
                                progress=bar.update, planned=lambda n: setattr(bar, "total", n))
    _, trail = _security(ctx)
    trail.record(AuditEvent("110107", "C", 0 if not report.failed else 4, user_name="cli", patient_id=patient_id,
                            object_type="remote-import", object_id=target.ae_title,
                            detail={"studies": len(report.studies), "retrieved": report.retrieved,
                                    "already_present": report.already_present, "failed": report.failed}))
    click.echo(f"{len(report.studies)} studies on {target.ae_title}: {report.already_present} instances already here, "
               f"retrieved {report.retrieved}, failed {report.failed}")
    for failure in report.failures[:20]:
        click.echo(f"  {failure}")
    if report.failed:
        click.echo("run the same command again to retry what is still missing")
    sys.exit(1 if report.failed else 0)


@contextmanager
def _own_listener(ctx: click.Context, needed: bool) -> Iterator[None]:
    """This archive's DICOM listener for the duration of a C-MOVE into it, unless one is already up."""
    import socket

    settings = _settings(ctx)
    if not needed:
        yield
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener's own server does
        try:
            probe.bind((settings.dicom.host, settings.dicom.port))
            free = True
        except OSError:
            free = False
    if not free:
        yield  # the port is taken: `imagebank serve` (or another listener) receives the move
        return
    from imagebank.context import open_archive
    from imagebank.dimse.scp import DicomListener

    _, trail = _security(ctx)
    listener = DicomListener(settings.dicom, open_archive(settings), trail)
    listener.start()
    try:
        yield
    finally:
        listener.stop()


@main.group()
def db() -> None:
    """Index database schema management."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
@_friendly_errors
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply schema migrations to the index database."""
    from imagebank.storage import database

    settings = _settings(ctx)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = database.create_index_engine(settings.database_url)
    before = database.current_revision(engine)
    database.upgrade(engine, revision)
    click.echo(f"index schema: {before or 'empty'} -> {database.current_revision(engine)}")


@db.command("current")
@click.pass_context
@_friendly_errors
def db_current(ctx: click.Context) -> None:
    """Show the schema revision of the index database and the one this version needs."""
    from imagebank.storage import database

    engine = database.create_index_engine(_settings(ctx).database_url)
    click.echo(f"current: {database.current_revision(engine) or 'empty'}   head: {database.head_revision()}")


@main.group()
def viewer() -> None:
    """The OHIF web viewer served at /viewer."""


@viewer.command("install")
@click.pass_context
@_friendly_errors
def viewer_install(ctx: click.Context) -> None:
    """Fetch the OHIF viewer (@ohif/app) from the npm registry and install it for /viewer."""
    from imagebank.viewer import OHIF_PACKAGE, OHIF_VERSION, ViewerError, install, is_installed, viewer_dir

    directory = viewer_dir(_settings(ctx).dicomweb.viewer_dir)
    if is_installed(directory):
        click.echo(f"{OHIF_PACKAGE}@{OHIF_VERSION} is installed in {directory}")
        return
    click.echo(f"installing {OHIF_PACKAGE}@{OHIF_VERSION} from the npm registry into {directory}...")
    try:
        install(directory)
    except ViewerError as exc:
        raise ImagebankError(str(exc)) from None
    click.echo("installed; imagebank serve shows it at /viewer")


@main.group()
def ehr() -> None:
    """The EHR side: FHIR R4 ingest, patient linkage."""


def _audit_cli(ctx: click.Context, event_id: str, action: str, detail: dict[str, Any], outcome: int = 0, *,
               engine: Any = None, object_type: str = "ehr", object_id: str | None = None) -> None:
    """An audit event for a command, by the operating-system user who ran it."""
    import getpass

    from imagebank.context import open_engine, open_security
    from imagebank.security.audit import AuditEvent

    settings = _settings(ctx)
    _, trail = open_security(settings, engine or open_engine(settings))
    trail.record(AuditEvent(event_id, action, outcome, user_name=f"os:{getpass.getuser()}", object_type=object_type,
                            object_id=object_id, detail=detail))


@ehr.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--workers", type=int, help="Validation processes (default: ehr.workers, 0 = one per CPU).")
@click.option("--restart", is_flag=True, help="Ignore what earlier runs over the same files committed.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
@_friendly_errors
def ehr_ingest(ctx: click.Context, paths: tuple[str, ...], workers: int | None, restart: bool, no_progress: bool,
               as_json: bool) -> None:
    """Load FHIR R4 resources: Bulk Data NDJSON files (.ndjson, .ndjson.gz), Bundles and single
    resources (.json), or folders of them. Resumable; bad resources are reported, the rest load."""
    from tqdm import tqdm

    from imagebank.context import open_ehr, open_engine
    from imagebank.ehr.ingest import EhrIngest, count_lines, list_sources

    settings = _settings(ctx)
    store = open_ehr(settings, open_engine(settings))
    files = [f for p in paths for f in list_sources(p)]
    if not files:
        raise ImagebankError("no .ndjson, .ndjson.gz or .json files under " + ", ".join(paths))
    total = count_lines(files) if not no_progress else None
    with tqdm(total=total, unit="res", disable=no_progress, delay=0.5) as bar:
        summary = EhrIngest(store, batch_size=settings.ehr.batch_size,
                            workers=settings.ehr.workers if workers is None else workers,
                            resume=not restart, progress=bar.update).run(files)
    click.echo(json.dumps(summary.as_json(), indent=2) if as_json else summary.render())
    _audit_cli(ctx, "110107", "C", {"source": ", ".join(paths), **{k: int(v) for k, v in summary.actions.items()}},
               outcome=4 if summary.actions["rejected"] else 0)
    sys.exit(1 if summary.actions["rejected"] else 0)


@ehr.command("unlinked")
@click.option("--limit", type=click.IntRange(0, 100000), default=10, show_default=True, help="Examples per finding.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_friendly_errors
def ehr_unlinked(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Report what could not be linked: DICOM patients without an EHR record, studies without an order,
    report or encounter, orders and reports without a study, patients referenced but never received."""
    from imagebank.context import open_ehr, open_engine
    from imagebank.ehr.unlinked import render, report
    from imagebank.storage.database import read_only

    settings = _settings(ctx)
    store = open_ehr(settings, open_engine(settings))
    with read_only(store.engine) as conn:
        findings = report(conn, limit=limit)
    _audit_cli(ctx, "110110", "R", {"report": "ehr unlinked"})
    click.echo(json.dumps(findings, indent=2) if as_json else render(findings))


@ehr.command("stats")
@click.pass_context
@_friendly_errors
def ehr_stats(ctx: click.Context) -> None:
    """Count the stored FHIR resources by type."""
    from imagebank.context import open_ehr, open_engine

    settings = _settings(ctx)
    counts = open_ehr(settings, open_engine(settings)).counts()
    for rtype, n in sorted(counts.items()):
        click.echo(f"{rtype:20} {n}")
    click.echo(f"{'total':20} {sum(counts.values())}")


@ehr.command("synth")
@click.option("--patients", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--start", type=click.IntRange(min=0), default=0, help="First patient index (for shards).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for the NDJSON files.")
@_friendly_errors
def ehr_synth(patients: int, seed: int, start: int, out: str) -> None:
    """Write the synthetic hospital's EHR as FHIR Bulk Data NDJSON (one file per resource type)."""
    from imagebank.synth.ehr import write_ndjson

    counts = write_ndjson(out, seed, patients, start)
    click.echo(f"wrote {sum(counts.values())} resources of {patients} patients to {out}: "
               + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


# ------------------------------------------------------------------------------------------ de-identification
@main.group()
def deid() -> None:
    """De-identification into the research zone (DICOM PS3.15 Annex E) and the linkage vault."""


@deid.group("project")
def deid_project() -> None:
    """Projects: one secret key each, so pseudonyms are stable within a project and unlinkable across."""


@deid_project.command("create")
@click.argument("name")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False),
              help="Use this key (base64, from 'export-key' at another site) to produce the same pseudonyms.")
@click.option("--max-shift-days", type=click.IntRange(min=1, max=36500), default=1095, show_default=True,
              help="Dates move back by 1..N days per patient.")
@click.pass_context
@_friendly_errors
def deid_project_create(ctx: click.Context, name: str, key_file: str | None, max_shift_days: int) -> None:
    import base64
    import binascii

    from imagebank.context import open_vault

    key = None
    if key_file:
        try:
            key = base64.b64decode(Path(key_file).read_text().strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{key_file}: not a base64 key written by 'imagebank deid project export-key'") from None
    open_vault(_settings(ctx)).create_project(name, key=key, max_shift_days=max_shift_days)
    _audit_cli(ctx, "110100", "C", {"deid_project": name, "shared_key": bool(key)}, object_type="deid-project",
               object_id=name)
    click.echo(f"created de-identification project {name}" + (" with the given key" if key else ""))


@deid_project.command("list")
@click.pass_context
@_friendly_errors
def deid_project_list(ctx: click.Context) -> None:
    from imagebank.context import open_vault

    vault = open_vault(_settings(ctx))
    for name in vault.list_projects():
        counts = vault.counts(name)
        click.echo(f"{name}\t{counts['subjects']} patients\t{counts['studies']} studies")


def _as_principal(ctx: click.Context, username: str) -> Any:
    accounts, _ = _security(ctx)
    user = accounts.get_user(username)
    if user.disabled:
        raise ConfigError(f"user {username!r} is disabled")
    import getpass

    return user.principal(kind="user", address=f"cli:{getpass.getuser()}")


@deid_project.command("export-key")
@click.argument("name")
@click.option("--as", "as_user", required=True, help="The honest broker exporting the key (audited).")
@click.pass_context
@_friendly_errors
def deid_project_export_key(ctx: click.Context, name: str, as_user: str) -> None:
    """Print the project key (base64) for another site that must produce the same pseudonyms."""
    from imagebank.context import open_engine, open_security, open_vault

    settings = _settings(ctx)
    _, trail = open_security(settings, open_engine(settings))
    click.echo(open_vault(settings).export_key(name, principal=_as_principal(ctx, as_user), trail=trail))


@deid.command("profile")
@click.option("--option", "options", multiple=True, help="Add a PS3.15 option (repeatable).")
@click.option("--basic", is_flag=True, help="Start from the Basic Profile instead of [deid] options.")
@click.pass_context
@_friendly_errors
def deid_profile_show(ctx: click.Context, options: tuple[str, ...], basic: bool) -> None:
    """Show the profile a run would apply (options, table edition, engine version)."""
    import json

    from imagebank.context import deid_profile

    click.echo(json.dumps(deid_profile(_settings(ctx), options, basic=basic).describe(), indent=1))


@deid.command("run")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--project", required=True, help="The de-identification project (its key picks the pseudonyms).")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Research-zone output folder.")
@click.option("--study", "studies", multiple=True, help="An archived study to de-identify (repeatable).")
@click.option("--all-studies", is_flag=True, help="Every study in the archive.")
@click.option("--ehr", "with_ehr", is_flag=True, help="Also the EHR rows (FHIR resources) of every patient record.")
@click.option("--option", "options", multiple=True, help="Add a PS3.15 option for this run (repeatable).")
@click.option("--basic", is_flag=True, help="Basic Profile + --option only, instead of [deid] options.")
@click.option("--workers", type=int, help="Processes (default: deid.workers, 0 = one per CPU).")
@click.option("--retry-quarantined", is_flag=True, help="Try again what earlier runs quarantined.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@_friendly_errors
def deid_run(ctx: click.Context, paths: tuple[str, ...], project: str, output: str, studies: tuple[str, ...],
             all_studies: bool, with_ehr: bool, options: tuple[str, ...], basic: bool, workers: int | None,
             retry_quarantined: bool, no_progress: bool, as_json: bool) -> None:
    """De-identify DICOM files/folders, archived studies and EHR rows into OUTPUT.

    Every object is verified for leaks before it is written; what cannot be made safe is quarantined
    (DATA/deid-quarantine) and counted. Resumable: a rerun skips what is done. Exit status 1 when
    something was quarantined.
    """
    import itertools
    import json
    import os

    from tqdm import tqdm

    from imagebank.context import deid_profile, open_engine, open_vault
    from imagebank.deid.run import DeidJob, EhrExport, Worker, WorkerConfig, archive_sources, file_sources

    settings = _settings(ctx)
    if not (paths or studies or all_studies or with_ehr):
        raise ConfigError("nothing to de-identify: give files/folders, --study UID, --all-studies or --ehr")
    vault = open_vault(settings)
    proj = vault.project(project)
    engine = open_engine(settings)
    count = workers if workers is not None else settings.deid.workers
    count = count or (os.cpu_count() or 1)
    config = WorkerConfig(
        key=proj.key, max_shift_days=proj.max_shift_days, profile=deid_profile(settings, options, basic=basic),
        issuer_systems=settings.ehr.issuer_systems, output_dir=str(Path(output).resolve()),
        database_url=settings.database_url, blob_url=settings.blob_url,
        pixel_rules_file=settings.deid.pixel_rules_file or None, ocr=settings.deid.ocr == "auto",
        institutions=tuple(settings.deid.institutions))
    job = DeidJob(config, project=project, vault=vault, quarantine_dir=settings.data_dir / "deid-quarantine",
                  workers=count)
    sources = list(itertools.chain(
        file_sources(Path(p) for p in paths),
        archive_sources(engine, None if all_studies else studies) if (studies or all_studies) else ()))
    if sources:
        with tqdm(total=len(sources), unit="obj", disable=no_progress, desc="de-identify") as bar:
            job.run(sources, progress=bar.update, retry_quarantined=retry_quarantined)
    if with_ehr:
        export = EhrExport(Worker(config), engine, project=project, vault=vault, quarantine=job)
        records = export.records()
        with tqdm(total=len(records), unit="patient", disable=no_progress, desc="EHR") as bar:
            export.run(records, progress=bar.update)
    job.write_report()
    report = job.report
    _audit_cli(ctx, "110106", "E", {"deid_project": project, "released": report.released,
                                    "quarantined": report.quarantined + report.ehr_quarantined,
                                    "ehr_resources": report.ehr_resources}, engine=engine,
               object_type="deid-run", object_id=project)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1, sort_keys=True))
    else:
        rate = report.released / report.seconds if report.seconds else 0.0
        click.echo(f"released {report.released} objects ({report.bytes_out / 1e6:.1f} MB, {rate:.1f}/s), "
                   f"skipped {report.skipped} done earlier, quarantined {report.quarantined}"
                   + (f" ({', '.join(f'{k} {v}' for k, v in sorted(report.reasons.items()))})"
                      if report.reasons else "")
                   + (f"; EHR: {report.ehr_resources} resources, {report.ehr_quarantined} quarantined"
                      if with_ehr else ""))
    if report.quarantined or report.ehr_quarantined:
        sys.exit(1)


@deid.command("reidentify")
@click.argument("pseudonym_or_study")
@click.option("--project", required=True)
@click.option("--as", "as_user", required=True, help="The honest broker asking (needs linkage:read).")
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
@click.pass_context
@_friendly_errors
def deid_reidentify(ctx: click.Context, pseudonym_or_study: str, project: str, as_user: str, reason: str) -> None:
    """Who is behind a pseudonym or research Study UID (honest broker only; every attempt is audited)."""
    import json

    from imagebank.context import open_engine, open_security, open_vault

    settings = _settings(ctx)
    _, trail = open_security(settings, open_engine(settings))
    result = open_vault(settings).reidentify(project, pseudonym_or_study, principal=_as_principal(ctx, as_user),
                                             reason=reason, trail=trail)
    click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
