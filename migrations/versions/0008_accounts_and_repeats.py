"""dashboard accounts (users, their hospitals), who took an alert on, and predictions reused for a repeated picture

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('password_hash', sa.String(length=300), nullable=False),
        sa.Column('role', sa.String(length=20), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('email'),
    )
    op.create_table(
        'user_hospitals',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'hospital_id'),
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assigned_user_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_alerts_assigned_user_id_users'), 'users', ['assigned_user_id'],
                                    ['id'])
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('repeat_of_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_predictions_repeat_of_id_predictions'), 'predictions',
                                    ['repeat_of_id'], ['id'])
    # The worker looks a picture up by its hospital and content before classifying it.
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index('ix_images_hospital_id_sha256', ['hospital_id', 'sha256'], unique=False)


def downgrade():
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index('ix_images_hospital_id_sha256')
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_predictions_repeat_of_id_predictions'), type_='foreignkey')
        batch_op.drop_column('repeat_of_id')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_alerts_assigned_user_id_users'), type_='foreignkey')
        batch_op.drop_column('assigned_user_id')
    op.drop_table('user_hospitals')
    op.drop_table('users')
