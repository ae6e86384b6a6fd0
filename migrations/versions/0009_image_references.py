"""the hospital's patient and lesion references on each picture

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('patient_ref', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('lesion_ref', sa.String(length=100), nullable=True))
        # The worklist filters a hospital's alerts by patient.
        batch_op.create_index('ix_images_hospital_id_patient_ref', ['hospital_id', 'patient_ref'], unique=False)


def downgrade():
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index('ix_images_hospital_id_patient_ref')
        batch_op.drop_column('lesion_ref')
        batch_op.drop_column('patient_ref')
