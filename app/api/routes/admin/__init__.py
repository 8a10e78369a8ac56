"""Operator API: API keys, jobs, file checks, tenants, the audit trail and providers."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes.admin import audit, files, jobs, keys, providers, tenants
from app.auth.guards import ADMIN_ONLY

# Guarded once here, so no admin route can forget it; routes that need the caller read AdminCtx.
router = APIRouter(tags=["admin"], dependencies=[ADMIN_ONLY])
for module in (keys, jobs, files, tenants, audit, providers):
    router.include_router(module.router)
