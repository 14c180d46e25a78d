"""A DICOMweb server on loopback (the whole app under uvicorn) and a dicomweb-client signed in to it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.conftest import LiveServer


@dataclass
class Dicomweb:
    server: LiveServer
    client: DICOMwebClient
    session: requests.Session
    archive: Any

    @property
    def root(self) -> str:
        return self.server.url + "/dicom-web"


@pytest.fixture
def dicomweb(settings: Any, secured: Any) -> Iterator[Dicomweb]:
    from imagebank.web.app import create_app

    archive, accounts, audit = secured
    accounts.create_user("pacs", ["service"], "service password 1")
    token = accounts.create_token("pacs", "tests")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    with LiveServer(create_app(settings, archive, accounts, audit)) as server:
        client = DICOMwebClient(url=server.url + "/dicom-web", session=session)
        yield Dicomweb(server, client, session, archive)
