"""DICOMweb (PS3.18) over the archive, served under ``/dicom-web`` by ``imagebank serve``.

- :mod:`~imagebank.dicomweb.multipart` -- streaming multipart/related reader and writer.
- :mod:`~imagebank.dicomweb.negotiation` -- Accept -> media type and transfer syntax (406 rules).
- :mod:`~imagebank.dicomweb.qido` -- QIDO-RS query parameters onto the shared query engine.
- :mod:`~imagebank.dicomweb.stow` -- STOW-RS into the ingest pipeline, verdict per instance.
- :mod:`~imagebank.dicomweb.wado` -- WADO-RS instances, frames, bulk data and metadata.
- :mod:`~imagebank.dicomweb.rendering` -- rendered images and thumbnails (PS3.4 Annex N pipeline).
- :mod:`~imagebank.dicomweb.routes` -- the HTTP routes, including WADO-URI.
"""
