"""What the admin route modules share: their prefix, error responses and the row id bound."""

from __future__ import annotations

from app.core.errors import AuthenticationFailed, InvalidRequest, PermissionDenied

# On each module's router, not the including one: a route's own path (what the audit trail
# names a refused request by) does not carry the prefixes of the routers that include it.
PREFIX = "/admin"
ADMIN_ERRORS = (InvalidRequest, AuthenticationFailed, PermissionDenied)
MAX_ID = 2**31 - 1  # row ids are 32-bit integers
