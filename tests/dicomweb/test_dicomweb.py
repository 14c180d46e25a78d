"""DICOMweb conformance with a real client (dicomweb-client over loopback HTTP), SQLite and PostgreSQL.

STOW-RS (PS3.18 10.5), QIDO-RS (10.6), WADO-RS (10.4) and WADO-URI (9), and bad input: each error gets
its status and a readable message, nothing is half-stored, and the server keeps serving.
"""

from __future__ import annotations

import copy
import gzip
import io
import socket
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.data import get_testdata_file

from tests.dicomweb.conftest import Dicomweb

SAMPLES = ["CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_implicit.dcm",
           "JPEG2000.dcm"]


def _sample(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def _related(parts: list[bytes], boundary: str = "b0undary", part_type: str = "application/dicom") -> bytes:
    body = b"".join(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return body + f"--{boundary}--\r\n".encode()


def _post(dw: Dicomweb, body: bytes, *, boundary: str = "b0undary", path: str = "/studies",
          content_type: str | None = None) -> requests.Response:
    content_type = content_type or f'multipart/related; type="application/dicom"; boundary={boundary}'
    return dw.session.post(dw.root + path, data=body, headers={"Content-Type": content_type})


def _count(dw: Dicomweb) -> int:
    return int(dw.archive.index.stats()["instances"])


# ------------------------------------------------------------------------------- STOW-RS

def test_stow_qido_wado_round_trip_with_dicomweb_client(dicomweb: Dicomweb) -> None:
    datasets = [_sample(n) for n in SAMPLES]
    response = dicomweb.client.store_instances(datasets)
    stored = {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence}
    # MR_small_implicit.dcm is MR_small re-encoded: same SOP Instance UID... not in this set; all distinct.
    assert stored == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in response

    ct = datasets[0]
    studies = dicomweb.client.search_for_studies(search_filters={"PatientID": ct.PatientID})
    assert [s["0020000D"]["Value"][0] for s in studies] == [ct.StudyInstanceUID]
    assert studies[0]["00201208"]["Value"] == [1] and studies[0]["00080061"]["Value"] == ["CT"]
    series = dicomweb.client.search_for_series(ct.StudyInstanceUID)
    assert series[0]["0020000E"]["Value"] == [ct.SeriesInstanceUID]
    instances = dicomweb.client.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert instances[0]["00080018"]["Value"] == [ct.SOPInstanceUID]
    assert instances[0]["00280010"]["Value"] == [ct.Rows]

    for original in datasets:
        uids = (original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
        as_stored = dicomweb.client.retrieve_instance(*uids, media_types=(("application/dicom", "*"),))
        assert as_stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        default = dicomweb.client.retrieve_instance(*uids, media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
        assert default.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        # No transfer-syntax parameter: explicit VR little endian, the default (PS3.18 8.7.3.5.3).
        plain = dicomweb.session.get(f"{dicomweb.root}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}",
                                     headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert b"transfer-syntax=1.2.840.10008.1.2.1\r\n" in plain.content[:200]
        assert np.array_equal(default.pixel_array, original.pixel_array), "decompressed pixels are lossless"
        metadata = dicomweb.client.retrieve_instance_metadata(*uids)
        assert metadata["00080018"]["Value"] == [original.SOPInstanceUID]
        # dicomweb-client sends "Host: 127.0.0.1" without the port; the URI echoes the Host it was sent.
        assert urlparse(metadata["7FE00010"]["BulkDataURI"]).path.startswith("/dicom-web/studies/")
        frames = dicomweb.client.retrieve_instance_frames(*uids, [1])
        frame_bytes = original.pixel_array[0] if int(original.get("NumberOfFrames", 1)) > 1 else original.pixel_array
        assert frames[0] == np.ascontiguousarray(frame_bytes).astype(frame_bytes.dtype.newbyteorder("<")).tobytes()


def test_stow_verdict_per_instance_202_and_409(dicomweb: Dicomweb, make_instance: Any) -> None:
    good = make_instance(number=1)
    no_patient = make_instance(number=2, PatientID=None)
    response = _post(dicomweb, _related([good, no_patient, b"not DICOM at all"]))
    assert response.status_code == 202
    body = response.json()
    assert len(body["00081199"]["Value"]) == 1
    failed = body["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0xC000, 0xC000]
    assert "PatientID" in failed[0]["00000902"]["Value"][0]
    assert failed[0]["00081155"]["Value"] == [pydicom.dcmread(io.BytesIO(no_patient)).SOPInstanceUID]

    changed = make_instance(number=1, StudyDescription="changed")  # same UID, other bytes
    response = _post(dicomweb, _related([changed]))
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]
    assert _post(dicomweb, _related([good])).status_code == 200  # an identical re-send is a success
    assert _count(dicomweb) == 1


def test_stow_into_a_study_rejects_only_the_instance_of_another_study(dicomweb: Dicomweb, make_instance: Any) -> None:
    ours = make_instance(number=1)
    study = pydicom.dcmread(io.BytesIO(ours)).StudyInstanceUID
    other = make_instance(number=2, StudyInstanceUID="1.2.3.4.5")
    response = _post(dicomweb, _related([ours, other]), path=f"/studies/{study}")
    assert response.status_code == 202
    failed = response.json()["00081198"]["Value"]
    assert len(failed) == 1 and failed[0]["00081197"]["Value"] == [0xA900]
    assert _count(dicomweb) == 1


@pytest.mark.parametrize("case", ["truncated", "truncated-in-first-part", "wrong-boundary", "not-multipart",
                                  "other-part-type", "no-parts"])
def test_stow_whole_request_errors_store_nothing(dicomweb: Dicomweb, make_instance: Any, case: str) -> None:
    body = _related([make_instance(number=1), make_instance(number=2)])
    expected = 400
    if case == "truncated":
        response = _post(dicomweb, body[: len(body) - 200])
    elif case == "truncated-in-first-part":  # the message says what happened: cut off, not a wrong boundary
        response = _post(dicomweb, body[:300])
        assert "truncated" in response.json()["error"]
    elif case == "wrong-boundary":
        response = _post(dicomweb, body, boundary="another")
    elif case == "not-multipart":
        response, expected = _post(dicomweb, body, content_type="application/json"), 415
    elif case == "other-part-type":
        response, expected = _post(dicomweb, body, content_type='multipart/related; type="application/dicom+xml"; '
                                                                 'boundary=b0undary'), 415
    else:
        response = _post(dicomweb, b"--b0undary--\r\n")
    assert response.status_code == expected, response.text
    assert response.json()["error"] and "Traceback" not in response.text
    assert _count(dicomweb) == 0, "a failed request indexes nothing"
    assert not any(dicomweb.archive.blobs.keys()), "and leaves no blob behind"
    assert not list(dicomweb.archive.blobs.root.rglob(".tmp-*")), "not even a temporary file"
    assert dicomweb.session.get(dicomweb.root + "/studies").status_code == 204  # still serving


def test_stow_when_the_disk_refuses_the_request_s_blobs_stores_none_of_them(
        dicomweb: Dicomweb, make_instance: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from imagebank.storage.blobs import filesystem

    def disk_full(_fd: int) -> int:  # syncfs(2) failing: the blobs cannot be made durable
        filesystem.ctypes.set_errno(28)
        return -1

    monkeypatch.setattr(filesystem, "_syncfs", disk_full)
    response = _post(dicomweb, _related([make_instance(number=1), make_instance(number=2)]))
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0xA700, 0xA700]  # Out of Resources
    assert _count(dicomweb) == 0 and not any(dicomweb.archive.blobs.keys())
    assert not list(dicomweb.archive.blobs.root.rglob(".tmp-*")), "no temporary file is left behind"
    monkeypatch.undo()
    assert _post(dicomweb, _related([make_instance(number=1)])).status_code == 200  # and the retry is stored


def test_stow_oversized_request_is_refused(dicomweb: Dicomweb, settings: Any, make_instance: Any) -> None:
    settings.dicomweb.max_request_mb = 1
    big = _related([make_instance(number=1, pixels=True)] * 3)
    assert len(big) > 2**20
    response = _post(dicomweb, big)
    assert response.status_code == 413 and "max_request_mb" in response.json()["error"]
    # Without Content-Length (chunked), the limit is enforced while streaming.
    response = dicomweb.session.post(dicomweb.root + "/studies", data=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                                     headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'})
    assert response.status_code == 413
    assert _count(dicomweb) == 0


def test_client_dropping_the_connection_mid_upload_stores_nothing(dicomweb: Dicomweb, make_instance: Any) -> None:
    body = _related([make_instance(number=n, pixels=True) for n in (1, 2)])
    host = urlparse(dicomweb.server.url)
    with socket.create_connection((host.hostname, host.port)) as sock:
        head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: {host.netloc}\r\nContent-Length: {len(body)}\r\n"
                f"Authorization: {dicomweb.session.headers['Authorization']}\r\n"
                'Content-Type: multipart/related; type="application/dicom"; boundary=b0undary\r\n\r\n')
        sock.sendall(head.encode() + body[: len(body) * 3 // 4])
    assert dicomweb.session.get(dicomweb.root + "/studies").status_code == 204
    assert _count(dicomweb) == 0


# ------------------------------------------------------------------------------- QIDO-RS

@pytest.fixture
def three_studies(dicomweb: Dicomweb) -> list[pydicom.Dataset]:
    datasets = []
    for i, (name, date, modality) in enumerate([("Müller^Hans", "20240105", "CT"), ("MULLER^Anna", "20240620", "MR"),
                                                 ("Smith^John", "20231231", "CT")]):
        ds = _sample("CT_small.dcm")
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = name, f"P{i}", date, modality
        ds.AccessionNumber = f"ACC{i}"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.9.1.{i}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.9.2.{i}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.9.3.{i}"
        datasets.append(ds)
    dicomweb.client.store_instances(datasets)
    return datasets


def _qido(dw: Dicomweb, path: str, **params: Any) -> requests.Response:
    return dw.session.get(dw.root + path, params=params)


def _study_uids(response: requests.Response) -> list[str]:
    return [] if response.status_code == 204 else [r["0020000D"]["Value"][0] for r in response.json()]


def test_qido_matching_rules(dicomweb: Dicomweb, three_studies: list[pydicom.Dataset]) -> None:
    uid = [ds.StudyInstanceUID for ds in three_studies]
    assert _study_uids(_qido(dicomweb, "/studies", PatientID="P1")) == [uid[1]]
    assert sorted(_study_uids(_qido(dicomweb, "/studies", AccessionNumber="ACC0,ACC2"))) == [uid[0], uid[2]]
    assert _study_uids(_qido(dicomweb, "/studies", StudyDate="20240101-20241231")) == [uid[1], uid[0]]
    assert _study_uids(_qido(dicomweb, "/studies", **{"00080020": "-20231231"})) == [uid[2]]
    assert sorted(_study_uids(_qido(dicomweb, "/studies", PatientName="mull*"))) == [uid[0], uid[1]]  # accents, case
    assert _study_uids(_qido(dicomweb, "/studies", PatientName="sm?th*")) == [uid[2]]
    assert _study_uids(_qido(dicomweb, "/studies", PatientName="anna")) == []
    assert _study_uids(_qido(dicomweb, "/studies", PatientName="anna", fuzzymatching="true")) == [uid[1]]
    assert sorted(_study_uids(_qido(dicomweb, "/studies", ModalitiesInStudy="CT"))) == [uid[0], uid[2]]
    assert _study_uids(_qido(dicomweb, "/studies", StudyInstanceUID=f"{uid[0]},{uid[2]}", PatientID="P2")) == [uid[2]]
    assert _qido(dicomweb, "/studies", PatientID="nobody").status_code == 204


def test_qido_paging_includefield_and_nested_paths(dicomweb: Dicomweb, three_studies: list[pydicom.Dataset]) -> None:
    first = _qido(dicomweb, "/studies", limit=2)
    assert len(first.json()) == 2 and first.headers["X-Total-Count"] == "3"
    assert "1 additional" in first.headers["Warning"]
    second = _qido(dicomweb, "/studies", limit=2, offset=2)
    assert len(second.json()) == 1 and second.headers["X-Total-Count"] == "3"
    assert set(_study_uids(first) + _study_uids(second)) == {ds.StudyInstanceUID for ds in three_studies}

    plain = _qido(dicomweb, "/studies", PatientID="P0").json()[0]
    assert "00081030" in plain and "00180015" not in plain
    everything = _qido(dicomweb, "/studies", PatientID="P0", includefield="all").json()[0]
    assert {"00080080", "00101010", "00201206"} <= set(everything)  # institution, age, related series
    by_tag = _qido(dicomweb, "/studies", PatientID="P0", includefield="00080080,PatientAge").json()[0]
    assert {"00080080", "00101010"} <= set(by_tag)

    study = three_studies[0]
    series = _qido(dicomweb, f"/studies/{study.StudyInstanceUID}/series").json()
    assert series[0]["00201209"]["Value"] == [1]
    all_series = _qido(dicomweb, "/series", Modality="MR").json()
    assert [s["0020000D"]["Value"][0] for s in all_series] == [three_studies[1].StudyInstanceUID]
    nested = _qido(dicomweb, f"/studies/{study.StudyInstanceUID}/series/{study.SeriesInstanceUID}/instances",
                   includefield="ImageType").json()
    assert nested[0]["00080008"]["Value"] == list(study.ImageType)
    assert nested[0]["00081190"]["Value"][0].endswith(f"/instances/{study.SOPInstanceUID}")
    assert len(_qido(dicomweb, f"/studies/{study.StudyInstanceUID}/instances").json()) == 1
    assert len(_qido(dicomweb, "/instances", SOPInstanceUID=study.SOPInstanceUID).json()) == 1


@pytest.mark.parametrize("params, words", [
    ({"NoSuchKeyword": "x"}, "unknown query key"),
    ({"FFFF0000": "x"}, "not a tag"),
    ({"StudyDate": "20240101-2023"}, "not a date"),
    ({"StudyDate": "20241231-20240101"}, "ends before"),
    ({"limit": "-1"}, "non-negative"),
    ({"fuzzymatching": "maybe"}, "true or false"),
    ({"includefield": "Nonsense"}, "includefield"),
])
def test_qido_malformed_queries_get_400_with_the_reason(dicomweb: Dicomweb, params: dict[str, str],
                                                        words: str) -> None:
    response = _qido(dicomweb, "/studies", **params)
    assert response.status_code == 400 and words in response.json()["error"], response.text


def test_qido_json_is_gzipped_for_clients_that_take_it(dicomweb: Dicomweb, three_studies: list[Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from imagebank.dicomweb import routes

    headers = {"Authorization": dicomweb.session.headers["Authorization"], "Accept-Encoding": "gzip"}
    small = requests.get(dicomweb.root + "/studies", headers=headers, stream=True)
    assert len(small.raw.read()) < routes.GZIP_MIN_BYTES and "Content-Encoding" not in small.headers  # as is
    monkeypatch.setattr(routes, "GZIP_MIN_BYTES", 1024)  # what a study list of a busy archive weighs
    raw = requests.get(dicomweb.root + "/studies", headers=headers, stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert raw.headers["Content-Type"].startswith("application/dicom+json")
    assert b"0020000D" in gzip.decompress(raw.raw.read())
    assert _qido(dicomweb, "/studies", accept="application/dicom+json").status_code == 200
    assert _qido(dicomweb, "/studies", accept="application/dicom+xml").status_code == 406
    assert dicomweb.session.get(dicomweb.root + "/studies", headers={"Accept": "application/dicom+xml"}).status_code == 406


# ------------------------------------------------------------------------------- WADO-RS

def test_wado_transfer_syntax_negotiation(dicomweb: Dicomweb) -> None:
    j2k = _sample("JPEG2000.dcm")
    dicomweb.client.store_instances([j2k])
    url = f"{dicomweb.root}/studies/{j2k.StudyInstanceUID}/series/{j2k.SeriesInstanceUID}/instances/{j2k.SOPInstanceUID}"
    asked_jpegls = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'
    response = dicomweb.session.get(url, headers={"Accept": asked_jpegls})
    assert response.status_code == 406 and "re-compress" in response.json()["error"]
    response = dicomweb.session.get(url, headers={"Accept": "text/html"})
    assert response.status_code in (303, 406)
    frames = dicomweb.session.get(url + "/frames/1", headers={
        "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    stored = j2k.file_meta.TransferSyntaxUID
    assert frames.status_code == 200 and f"transfer-syntax={stored}" in frames.text[:400]
    j2k_frame = dicomweb.session.get(url + "/frames/1", headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert j2k_frame.status_code == 200 and "image/jp2" in j2k_frame.text[:300]
    assert dicomweb.session.get(url + "/frames/2").status_code == 404
    assert dicomweb.session.get(url + "/frames/x").status_code == 400


def test_wado_study_retrieve_streams_every_instance_with_an_exact_length(dicomweb: Dicomweb,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-instance retrieve sent as stored carries a Content-Length equal to what arrives (instances are
    read ahead in groups); asked in another syntax (transcoded, sizes unknown) it is chunked."""
    from imagebank.dicomweb import routes

    monkeypatch.setattr(routes, "READ_GROUP_BYTES", 1)  # a group per instance: the read-ahead path throughout
    ct = _sample("CT_small.dcm")
    for number in (1, 2, 3):
        instance = copy.deepcopy(ct)
        instance.SOPInstanceUID = instance.file_meta.MediaStorageSOPInstanceUID = f"{ct.SOPInstanceUID}.{number}"
        instance.InstanceNumber = number
        dicomweb.client.store_instances([instance])
    study = ct.StudyInstanceUID
    as_stored = dicomweb.session.get(f"{dicomweb.root}/studies/{study}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert as_stored.status_code == 200
    assert int(as_stored.headers["content-length"]) == len(as_stored.content)
    retrieved = dicomweb.client.retrieve_study(study)
    assert sorted(int(ds.InstanceNumber) for ds in retrieved) == [1, 2, 3]
    transcoded = dicomweb.session.get(f"{dicomweb.root}/studies/{study}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'})
    assert transcoded.status_code == 200 and "content-length" not in transcoded.headers
    assert transcoded.content.count(b"transfer-syntax=1.2.840.10008.1.2\r\n") == 3


def test_wado_study_series_metadata_and_bulkdata(dicomweb: Dicomweb) -> None:
    rgb = _sample("SC_rgb_rle_2frame.dcm")
    ct = _sample("CT_small.dcm")
    dicomweb.client.store_instances([rgb, ct])
    study = dicomweb.client.retrieve_study(ct.StudyInstanceUID)
    assert [ds.SOPInstanceUID for ds in study] == [ct.SOPInstanceUID]
    series = dicomweb.client.retrieve_series(rgb.StudyInstanceUID, rgb.SeriesInstanceUID,
                                             media_types=(("application/dicom", "*"),))
    assert series[0].file_meta.TransferSyntaxUID == rgb.file_meta.TransferSyntaxUID
    metadata = dicomweb.client.retrieve_series_metadata(rgb.StudyInstanceUID, rgb.SeriesInstanceUID)
    assert metadata[0]["00280008"]["Value"] == [2]
    frames = dicomweb.client.retrieve_instance_frames(rgb.StudyInstanceUID, rgb.SeriesInstanceUID,
                                                      rgb.SOPInstanceUID, [2, 1])
    assert frames[0] == rgb.pixel_array[1].tobytes() and frames[1] == rgb.pixel_array[0].tobytes()
    uri = dicomweb.client.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID,
                                                     ct.SOPInstanceUID)["7FE00010"]["BulkDataURI"]
    bulk = dicomweb.client.retrieve_bulkdata(dicomweb.server.url + urlparse(uri).path)
    assert bulk[0] == ct.PixelData
    assert dicomweb.session.get(f"{dicomweb.root}/studies/1.2.3.999").status_code == 404
    assert dicomweb.session.get(f"{dicomweb.root}/studies/not-a-uid/metadata").status_code == 400


def _image(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_rendered_and_thumbnails(dicomweb: Dicomweb) -> None:
    ct, rgb = _sample("CT_small.dcm"), _sample("SC_rgb_rle_2frame.dcm")
    dicomweb.client.store_instances([ct, rgb])
    base = f"{dicomweb.root}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}"
    jpeg = _image(dicomweb.session.get(base + "/rendered"))
    assert jpeg.format == "JPEG" and jpeg.size == (ct.Columns, ct.Rows) and jpeg.mode == "L"
    png = _image(dicomweb.session.get(base + "/rendered", headers={"Accept": "image/png"},
                                      params={"viewport": "64,64", "window": "40,400"}))
    assert png.format == "PNG" and png.size == (64, 64)
    # A window with everything below its floor renders black; the instance's own window does not.
    black = np.asarray(_image(dicomweb.session.get(base + "/rendered", params={"window": "100000,10"})))
    assert black.max() == 0 and np.asarray(jpeg).max() > 0
    thumb = _image(dicomweb.session.get(f"{dicomweb.root}/studies/{ct.StudyInstanceUID}/thumbnail"))
    assert max(thumb.size) == 128
    rgb_base = f"{dicomweb.root}/studies/{rgb.StudyInstanceUID}/series/{rgb.SeriesInstanceUID}/instances/{rgb.SOPInstanceUID}"
    second = np.asarray(_image(dicomweb.session.get(rgb_base + "/frames/2/rendered", headers={"Accept": "image/png"})))
    assert second.shape == rgb.pixel_array[1].shape and np.array_equal(second, rgb.pixel_array[1])
    assert dicomweb.session.get(rgb_base + "/frames/3/rendered").status_code == 404
    assert dicomweb.session.get(base + "/rendered", params={"viewport": "big"}).status_code == 400
    assert dicomweb.session.get(base + "/rendered", headers={"Accept": "image/gif"}).status_code == 406


def test_monochrome1_is_inverted(dicomweb: Dicomweb) -> None:
    ct = _sample("CT_small.dcm")
    dicomweb.client.store_instances([ct])
    inverted = _sample("CT_small.dcm")
    inverted.PhotometricInterpretation = "MONOCHROME1"
    inverted.SOPInstanceUID = inverted.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID + ".1"
    dicomweb.client.store_instances([inverted])
    base = f"{dicomweb.root}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
    params, headers = {"window": "40,400"}, {"Accept": "image/png"}
    normal = np.asarray(_image(dicomweb.session.get(base + ct.SOPInstanceUID + "/rendered", params=params, headers=headers)))
    flipped = np.asarray(_image(dicomweb.session.get(base + inverted.SOPInstanceUID + "/rendered", params=params,
                                                     headers=headers)))
    assert np.array_equal(flipped, 255 - normal)


def test_wado_uri(dicomweb: Dicomweb) -> None:
    ct = _sample("CT_small.dcm")
    dicomweb.client.store_instances([ct])
    params = {"requestType": "WADO", "studyUID": ct.StudyInstanceUID, "seriesUID": ct.SeriesInstanceUID,
              "objectUID": ct.SOPInstanceUID}
    assert _image(dicomweb.session.get(dicomweb.root + "/wado", params=params)).format == "JPEG"
    dicom = dicomweb.session.get(dicomweb.root + "/wado", params={**params, "contentType": "application/dicom"})
    assert pydicom.dcmread(io.BytesIO(dicom.content)).SOPInstanceUID == ct.SOPInstanceUID
    sized = _image(dicomweb.session.get(dicomweb.root + "/wado", params={**params, "rows": "32", "contentType": "image/png"}))
    assert sized.size == (32, 32)
    assert dicomweb.session.get(dicomweb.root + "/wado", params={"requestType": "WADO"}).status_code == 400
    assert dicomweb.session.get(dicomweb.root + "/wado", params={**params, "requestType": "X"}).status_code == 400


def test_dicomweb_needs_authorization(dicomweb: Dicomweb, secured: Any) -> None:
    assert requests.get(dicomweb.root + "/studies").status_code == 401
    _archive, accounts, _audit = secured
    accounts.create_user("res", ["researcher"], "research password 1")
    token = accounts.create_token("res", "t")
    response = requests.get(dicomweb.root + "/studies", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403  # researchers never see identified data
    accounts.create_user("doc", ["clinician"], "clinician password 1")
    reader = accounts.create_token("doc", "t")
    response = requests.post(dicomweb.root + "/studies", data=_related([b"x"]), headers={
        "Authorization": f"Bearer {reader}", "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'})
    assert response.status_code == 403  # reading is not storing
