"""jobs: one index on (status, created_at, id) in place of the one on status alone

Reconcile reads the queued jobs in arrival order, a chunk at a time, and between passes only
those created lately: with this index each chunk is a range read, not a sort of every queued
row. Every query on status alone uses its first column, so the writes keep one status index.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at", "id"])
    op.drop_index("ix_jobs_status", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.drop_index("ix_jobs_status_created", table_name="jobs")
