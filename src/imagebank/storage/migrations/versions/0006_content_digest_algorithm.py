"""content digest algorithm

The ``sha256`` columns become ``content_digest`` (and the duplicate log's ``previous_digest``/``new_digest``),
and ``archive_settings`` records which algorithm made them. An archive that already holds instances keeps
SHA-256, so a re-sent instance still compares equal to its stored copy; an archive without any instance yet
(a new one) takes BLAKE3. See imagebank.storage.digest.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.alter_column('sha256', new_column_name='content_digest', existing_type=sa.String(length=64),
                              existing_nullable=False)
    with op.batch_alter_table('ingest_log', schema=None) as batch_op:
        batch_op.alter_column('previous_sha256', new_column_name='previous_digest', existing_type=sa.String(length=64))
        batch_op.alter_column('new_sha256', new_column_name='new_digest', existing_type=sa.String(length=64))
    settings = op.create_table(
        'archive_settings',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('value', sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    holds_instances = op.get_bind().execute(sa.text("SELECT 1 FROM instances LIMIT 1")).first() is not None
    op.bulk_insert(settings, [{'name': 'content_digest', 'value': 'sha256' if holds_instances else 'blake3'}])


def downgrade() -> None:
    # Digests other than SHA-256 would keep their values under the old column name: refuse instead.
    algorithm = op.get_bind().execute(
        sa.text("SELECT value FROM archive_settings WHERE name = 'content_digest'")).scalar()
    if algorithm not in (None, 'sha256'):
        raise RuntimeError(f"this archive's content digests are {algorithm}, not SHA-256: revision 0005 cannot "
                           "hold them")
    op.drop_table('archive_settings')
    with op.batch_alter_table('ingest_log', schema=None) as batch_op:
        batch_op.alter_column('new_digest', new_column_name='new_sha256', existing_type=sa.String(length=64))
        batch_op.alter_column('previous_digest', new_column_name='previous_sha256', existing_type=sa.String(length=64))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.alter_column('content_digest', new_column_name='sha256', existing_type=sa.String(length=64),
                              existing_nullable=False)
