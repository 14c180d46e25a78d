"""The archive: the one ingest pipeline every entry point uses (CLI, DICOMweb, DIMSE).

- :class:`Archive` -- ``ingest(bytes|path)`` for one instance, ``commit_staged`` for batches whose
  blobs were written by workers; events on :attr:`Archive.events`.
- :mod:`imagebank.archive.bulk` -- parallel, resumable ingest of folders, zip files and DICOMDIRs.
- :mod:`imagebank.archive.consistency` -- index vs blob store check and orphan clean-up.
"""

from imagebank.archive.pipeline import Archive, IngestResult
from imagebank.storage.index import Outcome

__all__ = ["Archive", "IngestResult", "Outcome"]
