"""Storage ports and adapters.

- :mod:`imagebank.storage.blobs`: where instance bytes live (filesystem, S3-compatible), behind
  :class:`~imagebank.storage.blobs.BlobStore` and chosen by URL in :func:`~imagebank.storage.blobs.open_blob_store`.
- :mod:`imagebank.storage.schema` / :mod:`imagebank.storage.index`: the metadata index (SQLAlchemy,
  SQLite or PostgreSQL) and its Alembic migrations.
"""
