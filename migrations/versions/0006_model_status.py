"""model versions' status: candidate, champion, retired or rejected

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 17:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=20), nullable=False, server_default='candidate'))
    # What the rows already say: the champion, and versions that served once (promoted, then replaced).
    op.execute("UPDATE model_versions SET status = 'champion' WHERE is_champion")
    op.execute("UPDATE model_versions SET status = 'retired' WHERE NOT is_champion AND promoted_at IS NOT NULL")


def downgrade():
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('status')
