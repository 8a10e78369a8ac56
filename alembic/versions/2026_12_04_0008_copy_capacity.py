"""copy capacity: pinned files, when each provider copy was last used

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(
            sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("provider_copies") as batch:
        batch.add_column(
            sa.Column("last_used_at", app.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.create_index(
            batch.f("ix_provider_copies_provider_status"), ["provider", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("provider_copies") as batch:
        batch.drop_index(batch.f("ix_provider_copies_provider_status"))
        batch.drop_column("last_used_at")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("pinned")
