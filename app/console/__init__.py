"""The operator console's page, script and styles, shipped as package data (no build step)."""
