"""shift measurements: how far each hospital's recent images lie from a model's training images

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'shift_measurements',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.Column('model_version_id', sa.Integer(), nullable=False),
        sa.Column('measured_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('images', sa.Integer(), nullable=False),
        sa.Column('last_image_id', sa.Integer(), nullable=False),
        sa.Column('auc', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'], ),
        sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('shift_measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shift_measurements_hospital_id'), ['hospital_id'], unique=False)


def downgrade():
    with op.batch_alter_table('shift_measurements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shift_measurements_hospital_id'))
    op.drop_table('shift_measurements')
