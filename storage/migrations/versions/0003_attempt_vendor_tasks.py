"""attempts: the vendor task of an asynchronous call, so a reclaimed job resumes it

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("vendor_task_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("vendor_task_url", sa.Text(), nullable=True))
        batch.create_index("ix_attempts_job_outcome", ["job_id", "outcome"])


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ix_attempts_job_outcome")
        batch.drop_column("vendor_task_url")
        batch.drop_column("vendor_task_id")
