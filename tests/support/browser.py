"""Debian's Chromium driven by Playwright, fenced to the gateway under test.

Playwright's own browser builds are never downloaded: the tests launch /usr/bin/chromium
(`apt-get install chromium`) with a new empty profile. Every request to another origin is
refused and remembered, so a test can assert that a page needed nothing from outside.
Screenshots go under FILEGATE_TEST_ARTIFACTS (default `test-artifacts/`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, Route, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("FILEGATE_TEST_ARTIFACTS", "test-artifacts"))
# How long an expectation may wait for the page: generous, since the machine may be busy.
EXPECT_TIMEOUT_MS = 15_000


@dataclass
class Browser:
    """A browser context allowed to reach `origin` only, and what it tried to reach elsewhere."""

    context: BrowserContext
    origin: str
    artifacts: Path
    outside: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def page(self) -> Page:
        page = await self.context.new_page()

        async def on_dialog(dialog: object) -> None:
            self.dialogs.append(getattr(dialog, "message", ""))
            await dialog.dismiss()  # type: ignore[attr-defined]

        page.on("dialog", on_dialog)
        return page

    async def shot(self, page: Page, name: str) -> Path:
        """A full-page screenshot kept as a test artifact."""
        path = self.artifacts / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


def artifact_dir(node_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", node_id).strip("_")
    path = ARTIFACTS / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


@asynccontextmanager
async def chromium(origin: str, *, artifacts: Path) -> AsyncIterator[Browser]:
    """Chromium with a fresh profile that may talk to `origin` (scheme://host:port) only."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as pw:
        with tempfile.TemporaryDirectory(prefix="filegate-chromium-") as profile:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
            )
            browser = Browser(context=context, origin=origin, artifacts=artifacts)

            async def fence(route: Route) -> None:
                url = route.request.url
                if url == origin or url.startswith(f"{origin}/"):
                    await route.continue_()
                else:
                    browser.outside.append(url)
                    await route.abort("blockedbyclient")

            await context.route("**/*", fence)
            try:
                yield browser
            finally:
                for number, page in enumerate(context.pages):
                    if not page.is_closed() and page.url != "about:blank":
                        await browser.shot(page, f"final-{number}")
                await context.close()
