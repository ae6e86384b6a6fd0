"""heatmap attempts and the reason a heatmap could not be drawn

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 11:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heatmap_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('heatmap_error', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('heatmap_error')
        batch_op.drop_column('heatmap_attempts')
