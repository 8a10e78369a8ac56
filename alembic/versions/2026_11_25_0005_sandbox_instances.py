"""sandbox instances

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 13:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sandbox_instances",
        sa.Column("sandbox", sa.String(length=500), nullable=False),
        sa.Column("instance_id", sa.String(length=64), nullable=False),
        sa.Column("seen_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sandbox", name=op.f("pk_sandbox_instances")),
    )


def downgrade() -> None:
    op.drop_table("sandbox_instances")
