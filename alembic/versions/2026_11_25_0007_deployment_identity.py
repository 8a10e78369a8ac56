"""deployment identity

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column("key", sa.String(length=20), nullable=False),
        sa.Column("tag", sa.String(length=16), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_deployment")),
        sa.UniqueConstraint("tag", name=op.f("uq_deployment_tag")),
    )


def downgrade() -> None:
    op.drop_table("deployment")
