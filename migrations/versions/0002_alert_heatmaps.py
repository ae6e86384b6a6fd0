"""alert heatmaps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:52:05.614426

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heatmap_path', sa.String(length=300), nullable=True))



def downgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('heatmap_path')

