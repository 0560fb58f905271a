"""tenants: per-tenant limits (NULL = the IMGQ_TENANT_* default); jobs: the cost reserved at submit

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_queued", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_running", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("budget_period", sa.String(length=10), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("estimated_cost_usd", sa.Float(), nullable=False,
                                   server_default="0"))
        batch.create_index("ix_jobs_tenant_created", ["tenant_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_created")
        batch.drop_column("estimated_cost_usd")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("budget_period")
        batch.drop_column("max_running")
        batch.drop_column("max_queued")
        batch.drop_column("rpm")
        batch.drop_column("budget_usd")
