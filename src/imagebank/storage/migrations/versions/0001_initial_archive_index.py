"""initial archive index

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 04:22:30.609202
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ingest_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('previous_sha256', sa.String(length=64), nullable=True),
    sa.Column('new_sha256', sa.String(length=64), nullable=True),
    sa.Column('origin', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_log'))
    )
    with op.batch_alter_table('ingest_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingest_log_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_log_sop_instance_uid'), ['sop_instance_uid'], unique=False)

    op.create_table('ingest_sources',
    sa.Column('job_key', sa.String(length=64), nullable=False),
    sa.Column('source_key', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('mtime_ns', sa.BigInteger(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('job_key', 'source_key', name=op.f('pk_ingest_sources'))
    )
    op.create_table('patients',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer_of_patient_id', sa.String(length=64), server_default='', nullable=False),
    sa.Column('patient_name', sa.String(length=324), nullable=True),
    sa.Column('patient_name_search', sa.String(length=324), nullable=True),
    sa.Column('patient_birth_date', sa.String(length=8), nullable=True),
    sa.Column('patient_birth_time', sa.String(length=16), nullable=True),
    sa.Column('patient_sex', sa.String(length=16), nullable=True),
    sa.Column('other_patient_ids', sa.Text(), nullable=True),
    sa.Column('ethnic_group', sa.String(length=16), nullable=True),
    sa.Column('patient_comments', sa.Text(), nullable=True),
    sa.Column('number_of_patient_related_studies', sa.Integer(), server_default='0', nullable=False),
    sa.Column('number_of_patient_related_series', sa.Integer(), server_default='0', nullable=False),
    sa.Column('number_of_patient_related_instances', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patients')),
    sa.UniqueConstraint('patient_id', 'issuer_of_patient_id', name=op.f('uq_patients_patient_id_issuer_of_patient_id'))
    )
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patients_patient_birth_date'), ['patient_birth_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_patients_patient_name_search'), ['patient_name_search'], unique=False)

    op.create_table('studies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('study_date', sa.String(length=8), nullable=True),
    sa.Column('study_time', sa.String(length=16), nullable=True),
    sa.Column('accession_number', sa.String(length=16), nullable=True),
    sa.Column('issuer_of_accession_number', sa.String(length=64), nullable=True),
    sa.Column('study_id', sa.String(length=16), nullable=True),
    sa.Column('study_description', sa.String(length=64), nullable=True),
    sa.Column('referring_physician_name', sa.String(length=324), nullable=True),
    sa.Column('referring_physician_name_search', sa.String(length=324), nullable=True),
    sa.Column('name_of_physicians_reading_study', sa.String(length=324), nullable=True),
    sa.Column('institution_name', sa.String(length=64), nullable=True),
    sa.Column('patient_age', sa.String(length=4), nullable=True),
    sa.Column('patient_size', sa.String(length=16), nullable=True),
    sa.Column('patient_weight', sa.String(length=16), nullable=True),
    sa.Column('timezone_offset_from_utc', sa.String(length=5), nullable=True),
    sa.Column('specific_character_set', sa.String(length=128), nullable=True),
    sa.Column('modalities_in_study', sa.String(length=256), nullable=True),
    sa.Column('sop_classes_in_study', sa.Text(), nullable=True),
    sa.Column('number_of_study_related_series', sa.Integer(), server_default='0', nullable=False),
    sa.Column('number_of_study_related_instances', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_pk'], ['patients.id'], name=op.f('fk_studies_patient_pk_patients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_studies')),
    sa.UniqueConstraint('study_instance_uid', name=op.f('uq_studies_study_instance_uid'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_patient_pk_study_date'), ['patient_pk', 'study_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_referring_physician_name_search'), ['referring_physician_name_search'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_study_date_study_time'), ['study_date', 'study_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_updated_at'), ['updated_at'], unique=False)

    op.create_table('series',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('study_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('series_description', sa.String(length=64), nullable=True),
    sa.Column('series_date', sa.String(length=8), nullable=True),
    sa.Column('series_time', sa.String(length=16), nullable=True),
    sa.Column('body_part_examined', sa.String(length=16), nullable=True),
    sa.Column('laterality', sa.String(length=16), nullable=True),
    sa.Column('protocol_name', sa.String(length=64), nullable=True),
    sa.Column('manufacturer', sa.String(length=64), nullable=True),
    sa.Column('manufacturer_model_name', sa.String(length=64), nullable=True),
    sa.Column('station_name', sa.String(length=16), nullable=True),
    sa.Column('institution_name', sa.String(length=64), nullable=True),
    sa.Column('performed_procedure_step_start_date', sa.String(length=8), nullable=True),
    sa.Column('performed_procedure_step_start_time', sa.String(length=16), nullable=True),
    sa.Column('requested_procedure_id', sa.String(length=16), nullable=True),
    sa.Column('scheduled_procedure_step_id', sa.String(length=16), nullable=True),
    sa.Column('number_of_series_related_instances', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_pk'], ['studies.id'], name=op.f('fk_series_study_pk_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('series_instance_uid', name=op.f('uq_series_series_instance_uid'))
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_modality_body_part_examined_study_pk'), ['modality', 'body_part_examined', 'study_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_study_pk_series_number'), ['study_pk', 'series_number'], unique=False)

    op.create_table('instances',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('transfer_syntax_uid', sa.String(length=64), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('columns', sa.Integer(), nullable=True),
    sa.Column('bits_allocated', sa.Integer(), nullable=True),
    sa.Column('number_of_frames', sa.Integer(), nullable=True),
    sa.Column('content_date', sa.String(length=8), nullable=True),
    sa.Column('content_time', sa.String(length=16), nullable=True),
    sa.Column('acquisition_datetime', sa.String(length=26), nullable=True),
    sa.Column('image_type', sa.String(length=128), nullable=True),
    sa.Column('completion_flag', sa.String(length=16), nullable=True),
    sa.Column('verification_flag', sa.String(length=16), nullable=True),
    sa.Column('blob_key', sa.String(length=80), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('origin', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['series_pk'], ['series.id'], name=op.f('fk_instances_series_pk_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instances')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_instances_sop_instance_uid'))
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_blob_key'), ['blob_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_series_pk_instance_number'), ['series_pk', 'instance_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_sop_class_uid'), ['sop_class_uid'], unique=False)

    op.create_table('instance_headers',
    sa.Column('instance_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dicom_json', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['instance_pk'], ['instances.id'], name=op.f('fk_instance_headers_instance_pk_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_pk', name=op.f('pk_instance_headers'))
    )


def downgrade() -> None:
    op.drop_table('instance_headers')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_sop_class_uid'))
        batch_op.drop_index(batch_op.f('ix_instances_series_pk_instance_number'))
        batch_op.drop_index(batch_op.f('ix_instances_blob_key'))

    op.drop_table('instances')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_study_pk_series_number'))
        batch_op.drop_index(batch_op.f('ix_series_modality_body_part_examined_study_pk'))

    op.drop_table('series')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_updated_at'))
        batch_op.drop_index(batch_op.f('ix_studies_study_date_study_time'))
        batch_op.drop_index(batch_op.f('ix_studies_referring_physician_name_search'))
        batch_op.drop_index(batch_op.f('ix_studies_patient_pk_study_date'))
        batch_op.drop_index(batch_op.f('ix_studies_accession_number'))

    op.drop_table('studies')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patients_patient_name_search'))
        batch_op.drop_index(batch_op.f('ix_patients_patient_birth_date'))

    op.drop_table('patients')
    op.drop_table('ingest_sources')
    with op.batch_alter_table('ingest_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingest_log_sop_instance_uid'))
        batch_op.drop_index(batch_op.f('ix_ingest_log_at'))

    op.drop_table('ingest_log')
