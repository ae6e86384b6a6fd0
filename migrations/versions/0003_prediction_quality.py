"""prediction sharpness and quality warning

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 19:45:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sharpness', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('quality_warning', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('quality_warning')
        batch_op.drop_column('sharpness')
