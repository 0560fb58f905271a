"""batches: the count of their jobs that have ended, kept by whoever ends one

The transaction that ends a batch's job adds it to this count; the one that brings it to the
batch's total completes the batch in that same transaction, instead of asking after every job
whether any is left. Existing batches start from their jobs' statuses.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ENDED = ("succeeded", "failed", "canceled")


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("ended_jobs", sa.Integer(), nullable=False, server_default="0"))
    batches, jobs = sa.table("batches", sa.column("id"), sa.column("ended_jobs")), sa.table(
        "jobs", sa.column("batch_id"), sa.column("status"))
    ended = (sa.select(sa.func.count()).select_from(jobs)
             .where(jobs.c.batch_id == batches.c.id, jobs.c.status.in_(ENDED)).scalar_subquery())
    op.execute(batches.update().values(ended_jobs=ended))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("ended_jobs")
