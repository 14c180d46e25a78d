"""Imagebank: an open-source platform for medical images.

Entry points a caller needs:

- :func:`imagebank.config.load_settings` reads the one configuration (TOML + environment).
- :func:`imagebank.context.open_archive` opens the archive (index + blob store) it describes.
- :class:`imagebank.archive.Archive` ingests DICOM through the single ingest pipeline.
"""

__version__ = "0.1.0"
