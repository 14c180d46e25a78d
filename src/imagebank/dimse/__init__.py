"""DICOM network services (DIMSE) over pynetdicom.

- :class:`~imagebank.dimse.scp.DicomListener` -- the acceptor started by ``imagebank serve``:
  association authorization (known peers by AE title and address, decided by
  :mod:`imagebank.security.policy`), C-ECHO, C-STORE through the archive's ingest pipeline, DICOM TLS.
"""
