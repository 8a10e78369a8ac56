"""Pipelined placement: the provider upload fed from the request body while it arrives.

The intake hands each piece it spools to `HeadStart.send` as well, through a queue of one
piece (the reader waits while the provider is slower: memory stays flat). The provider upload
is held open before its last byte until the bytes are verified and found to be no dedup hit:
then `finish` sends it (the provider completes while the file is claimed) and placement takes
the `result`. Whatever else ends the request (a hit, a client gone, a digest mismatch, a
refusal) `close`s it: an upload not finished is cut before its last byte, so the provider
makes nothing; a finished one is awaited and the copy it made deleted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from enum import StrEnum

from app.core.errors import GatewayError, ProviderError, ProviderUnavailable
from app.core.metrics import GatewayMetrics
from app.core.purposes import canonical
from app.providers import size_limit
from app.providers.base import ProviderAdapter, ProviderFile
from app.providers.hub import ProviderHub, Target
from app.services.files.settle import Placer
from app.services.files.views import new_file_id
from app.services.placement import provider_name_for

logger = logging.getLogger("filegate.placement")

QUEUED_PIECES = 1


class _State(StrEnum):
    SENDING = "sending"  # pieces go on as they arrive
    FINISHING = "finishing"  # the last byte is on its way: the provider may make a file
    TAKEN = "taken"  # placement owns the outcome
    DROPPED = "dropped"  # cut off or cleaned up: the file is placed from its blob if at all


class HeadStart:
    """One provider upload that runs while the client's body arrives."""

    def __init__(
        self,
        *,
        adapter: ProviderAdapter,
        target: Target,
        providers: ProviderHub,
        metrics: GatewayMetrics,
        file_id: str,
        filename: str,
        provider_filename: str,
        content_type: str,
        purpose: str,
        requested: str,
    ) -> None:
        self.adapter = adapter
        self.target = target
        self.file_id = file_id
        self._providers = providers
        self._metrics = metrics
        self._filename = filename
        self._purpose = purpose
        self._requested = requested
        self._limit = size_limit(target.rule, filename)
        self._keepalive = adapter.config.idle_timeout / 2
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUED_PIECES)
        self._state = _State.SENDING
        self.size: int | None = None  # UploadBody: not known while the body arrives
        self._task = asyncio.create_task(
            adapter.upload_once(
                body=self,
                filename=provider_filename,
                purpose=target.rule.native,
                content_type=content_type,
            )
        )
        self._task.add_done_callback(lambda _: self._drain())

    @property
    def provider(self) -> str:
        return self.target.provider

    @property
    def usable(self) -> bool:
        """Whether placement can take this upload's outcome for its target."""
        return self._state in (_State.SENDING, _State.FINISHING)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (UploadBody); read once, by the one try there is."""
        while True:
            try:
                async with asyncio.timeout(self._keepalive):
                    piece = await self._queue.get()
            except TimeoutError:
                # Waiting for the client is no provider stall: an empty piece (nothing goes on
                # the wire) tells the call's idle watchdog, so a slow client opens no breaker.
                yield b""
                continue
            if piece is None:
                return
            yield piece

    async def send(self, piece: bytes, *, total: int) -> None:
        """Pass on the next piece; `total` is the file's size with it. Past the target's size
        limit the upload is cut, and the request refused if no provider can take the file."""
        if self._state is not _State.SENDING:
            return
        if total > self._limit:
            await self.close()
            # The same refusal an upload of this size gets before any provider call.
            self._providers.targets(
                purpose=self._purpose,
                filename=self._filename,
                size=total,
                requested=self._requested,
            )
            return
        if self._task.done():
            return  # failed already: placement tries its blob instead
        await self._queue.put(piece)

    def _drain(self) -> None:
        # The upload ended (failed or cut): wake a sender waiting for room; nothing is read.
        while not self._queue.empty():
            self._queue.get_nowait()

    async def finish(self) -> None:
        """Send the last byte: the bytes are verified and wanted (the claim runs meanwhile)."""
        if self._state is not _State.SENDING:
            return
        self._state = _State.FINISHING
        if not self._task.done():
            await self._queue.put(None)  # a failing upload drains the queue: never stuck

    async def result(self) -> ProviderFile:
        """The provider's file once the upload ends, or the ProviderError it failed with."""
        await self.finish()
        self._state = _State.TAKEN
        try:
            return await self._task
        except ProviderError:
            raise
        except Exception as exc:
            logger.warning("pipelined upload to %s failed: %r", self.provider, exc)
            raise ProviderUnavailable(
                f"{self.provider} upload failed; try again later.", provider=self.provider
            ) from exc

    async def close(self) -> None:
        """Leave nothing behind unless placement took the outcome: cut an upload that has
        not sent its last byte, or wait for one that has and delete the copy it made. Safe
        to call twice."""
        if self._state in (_State.TAKEN, _State.DROPPED):
            return
        finishing = self._state is _State.FINISHING
        self._state = _State.DROPPED
        if not self._task.done() and not finishing:
            self._task.cancel()
        try:
            # Shielded: the upload is not cut by a cancellation of the request itself.
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.done():
                raise  # the request is cancelled: reconciliation removes what the upload makes
        except Exception:
            return  # it failed: nothing was made
        if self._task.cancelled():
            self._metrics.wasted_uploads.labels(self.provider, "aborted").inc()
            return
        made = self._task.result()
        self._metrics.wasted_uploads.labels(self.provider, "deleted").inc()
        try:
            await self.adapter.delete(made.id)
        except ProviderError:
            # Its name carries a file id that never got a row: reconciliation removes it.
            logger.warning("could not delete the unused %s copy %s", self.provider, made.id)


async def start(
    *,
    placer: Placer,
    purpose: str,
    requested: str,
    filename: str,
    content_type: str,
    declared: bool,
) -> HeadStart | None:
    """A head start on the first provider that would be tried for a file of this purpose and
    name (its size is not known yet); None when there is none to make. Without a declared
    digest it is speculative (a late dedup hit wastes it), and FILEGATE_SPECULATIVE_PLACEMENT
    turns that off."""
    if not declared and not placer.settings.speculative_placement:
        return None
    providers = placer.providers
    purpose = canonical(purpose)
    try:
        targets = providers.targets(purpose=purpose, filename=filename, size=1, requested=requested)
    except GatewayError:
        return None  # the refusal comes once the body is in, judged on its size too
    for target in targets:
        adapter = providers.adapter(target.provider)
        if await adapter.paused_for() is not None:
            continue  # circuit open: placement defers or falls back as it would anyway
        file_id = new_file_id()
        return HeadStart(
            adapter=adapter,
            target=target,
            providers=providers,
            metrics=placer.metrics,
            file_id=file_id,
            filename=filename,
            provider_filename=provider_name_for(
                file_id, filename, tag=await placer.deployment.tag()
            ),
            content_type=content_type,
            purpose=purpose,
            requested=requested,
        )
    return None
