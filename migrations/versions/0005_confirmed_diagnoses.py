"""confirmed diagnoses of images, with the value each replaced

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'confirmed_diagnoses',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('image_id', sa.Integer(), nullable=False),
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.Column('diagnosis', sa.String(length=40), nullable=False),
        sa.Column('method', sa.String(length=20), nullable=False),
        sa.Column('confirmed_by', sa.String(length=200), nullable=True),
        sa.Column('recorded_by', sa.String(length=200), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('replaced', sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'], ),
        sa.ForeignKeyConstraint(['image_id'], ['images.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('confirmed_diagnoses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_confirmed_diagnoses_hospital_id'), ['hospital_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_confirmed_diagnoses_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_confirmed_diagnoses_recorded_at'), ['recorded_at'], unique=False)


def downgrade():
    with op.batch_alter_table('confirmed_diagnoses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_confirmed_diagnoses_recorded_at'))
        batch_op.drop_index(batch_op.f('ix_confirmed_diagnoses_image_id'))
        batch_op.drop_index(batch_op.f('ix_confirmed_diagnoses_hospital_id'))
    op.drop_table('confirmed_diagnoses')
