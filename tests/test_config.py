from pathlib import Path

import pytest

from imagebank.config import load_settings
from imagebank.errors import ConfigError


def test_embedded_default_keeps_everything_in_the_data_folder(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "d", environ={})
    assert s.database_url == f"sqlite:///{tmp_path / 'd' / 'index.sqlite3'}"
    assert s.blob_url == (tmp_path / "d" / "blobs").as_uri()
    assert s.ingest.duplicate_policy == "reject"
    assert s.server.host == "127.0.0.1"


def test_data_folder_comes_from_environment_when_not_given(tmp_path: Path) -> None:
    s = load_settings(environ={"IMAGEBANK_DATA": str(tmp_path / "x")})
    assert s.data_dir == tmp_path / "x"


def test_toml_file_in_data_folder_then_environment_override(tmp_path: Path) -> None:
    (tmp_path / "imagebank.toml").write_text('[ingest]\nduplicate_policy = "replace"\nworkers = 3\n')
    s = load_settings(tmp_path, environ={"IMAGEBANK_INGEST__WORKERS": "5"})
    assert s.ingest.duplicate_policy == "replace"
    assert s.ingest.workers == 5


def test_invalid_setting_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "imagebank.toml").write_text('[ingest]\nduplicate_policy = "merge"\n')
    with pytest.raises(ConfigError, match="ingest.duplicate_policy"):
        load_settings(tmp_path, environ={})


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server.prot"):
        load_settings(tmp_path, environ={"IMAGEBANK_SERVER__PROT": "1"})


def test_broken_toml_and_missing_explicit_file_are_reported(tmp_path: Path) -> None:
    (tmp_path / "imagebank.toml").write_text("[ingest\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path, config_file=tmp_path / "nope.toml", environ={})


def test_lists_of_tables_come_from_toml_or_json_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / "imagebank.toml").write_text('[[dicom.peers]]\nae_title = "CT01"\nhost = "10.0.0.5"\n')
    s = load_settings(tmp_path, environ={})
    assert s.dicom.peers[0].ae_title == "CT01" and s.dicom.peers[0].permissions == ["archive:write"]
    s = load_settings(tmp_path, environ={"IMAGEBANK_DICOM__PEERS": '[{"ae_title": "PACS"}]'})
    assert [p.ae_title for p in s.dicom.peers] == ["PACS"]
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(tmp_path, environ={"IMAGEBANK_DICOM__PEERS": "[oops"})
