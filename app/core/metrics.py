"""Prometheus metrics of the gateway, on a registry owned by one app instance.

Under several server workers (`PROMETHEUS_MULTIPROC_DIR` set, see `app.server`) every process
writes its values to that directory and /metrics collects all of them. A gauge then needs a
`multiprocess_mode`: `mostrecent` for a reading of shared state (the database, the last
reconciliation), which every process would report alike, so a sum would count it once per
worker; `livemax` for what each process sees for itself (its breaker), where the worst view of a
live worker is the fleet's. Labels are bounded sets (providers, outcomes, states, job kinds,
route templates); the replica a series comes from is the scrape target's `instance` label.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """Upload, dedup, byte and provider-call series; no tenant or file labels."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # prometheus_client picks its value store from this variable when it is first imported.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.uploads = Counter(
            "filegate_uploads_total",
            "Upload requests by provider and outcome (created, deduplicated, failed).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.dedup_hits = Counter(
            "filegate_dedup_hits_total",
            "Uploads answered with an existing file of the same tenant, content and purpose.",
            registry=self.registry,
        )
        self.wasted_uploads = Counter(
            "filegate_wasted_provider_uploads_total",
            "Pipelined provider uploads not kept (a late dedup hit, a client gone, a digest "
            "mismatch, a size past the provider's limit), by provider and how they went "
            "(aborted in flight, deleted after).",
            ["provider", "how"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "filegate_upload_bytes_total",
            "Bytes received in accepted upload bodies.",
            registry=self.registry,
        )
        self.auth_refusals = Counter(
            "filegate_auth_refusals_total",
            "Requests refused for want of a valid credential (missing, invalid).",
            ["reason"],
            registry=self.registry,
        )
        self.blob_store_errors = Counter(
            "filegate_blob_store_errors_total",
            "Requests the blob store failed, by error code (insufficient_storage, "
            "storage_unavailable, blob_corrupt).",
            ["code"],
            registry=self.registry,
        )
        self.oldest_pending_file_age = Gauge(
            "filegate_oldest_pending_file_age_seconds",
            "Age of the oldest file waiting for a provider to take it (read at each scrape).",
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.provider_calls = Counter(
            "filegate_provider_calls_total",
            "Calls to provider file APIs by provider, operation and outcome.",
            ["provider", "operation", "outcome"],
            registry=self.registry,
        )
        self.provider_latency = Histogram(
            "filegate_provider_call_seconds",
            "Latency of provider file-API calls.",
            ["provider", "operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.fallbacks = Counter(
            "filegate_fallbacks_total",
            "Placements that moved on to a later provider in the order.",
            ["provider"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "filegate_jobs",
            "Jobs in the durable queue by state.",
            ["state"],
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.oldest_job_age = Gauge(
            "filegate_oldest_queued_job_age_seconds",
            "Age of the oldest due queued job.",
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.job_runs = Counter(
            "filegate_job_runs_total",
            "Job runs by kind and outcome (done, retry, dead, lost).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.jobs_purged = Counter(
            "filegate_jobs_purged_total",
            "Finished jobs deleted once past their retention, by state (done, dead).",
            ["state"],
            registry=self.registry,
        )
        self.storage_swept = Counter(
            "filegate_storage_swept_total",
            "Crash leftovers the storage sweep removed, by kind "
            "(spool, set_aside, blob, multipart).",
            ["kind"],
            registry=self.registry,
        )
        self.health_checks = Counter(
            "filegate_health_checks_total",
            "File health-check findings (ok, blob_corrupt, copy_missing).",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_drift = Counter(
            "filegate_reconcile_drift_total",
            "Registry drift found by reconciliation (missing, adopted, orphan_removed).",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.reconcile_foreign = Gauge(
            "filegate_reconcile_foreign_files",
            "Provider files of another deployment (or none) seen by the last reconciliation.",
            ["provider"],
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.reconcile_deletions_capped = Counter(
            "filegate_reconcile_deletions_capped_total",
            "Orphan deletions held back by FILEGATE_RECONCILE_MAX_DELETIONS.",
            ["provider"],
            registry=self.registry,
        )
        self.reconcile_deletions_held = Gauge(
            "filegate_reconcile_deletions_held",
            "Orphan deletions the last reconciliation held back at its cap (alert when > 0).",
            ["provider"],
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.account_files = Gauge(
            "filegate_provider_account_files",
            "Files held on a provider account, by purpose class ('all' for a whole account).",
            ["provider", "purpose_class"],
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.account_bytes = Gauge(
            "filegate_provider_account_bytes",
            "Bytes held on a provider account, by purpose class.",
            ["provider", "purpose_class"],
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.account_max_files = Gauge(
            "filegate_provider_account_max_files",
            "The file cap of a provider account's purpose class.",
            ["provider", "purpose_class"],
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.evictions = Counter(
            "filegate_evictions_total",
            "Provider copies evicted to make room, by provider and policy tier "
            "(replicated, extracted, lru).",
            ["provider", "tier"],
            registry=self.registry,
        )
        self.replacements = Counter(
            "filegate_replacements_total",
            "Evicted provider copies placed again from the stored blob.",
            ["provider"],
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "filegate_breaker_state",
            "Circuit breaker state per provider (0 closed, 1 half-open, 2 open).",
            ["provider"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.breaker_transitions = Counter(
            "filegate_breaker_transitions_total",
            "Circuit breaker state changes made or noticed by this process.",
            ["provider", "from", "to"],
            registry=self.registry,
        )
        self.provider_retries = Counter(
            "filegate_provider_retries_total",
            "Provider calls retried after a retryable fault, by provider and operation.",
            ["provider", "operation"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition: this process's series, or those of every worker process."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def observe_provider_call(
        self, provider: str, operation: str, outcome: str, seconds: float
    ) -> None:
        self.provider_calls.labels(provider, operation, outcome).inc()
        self.provider_latency.labels(provider, operation, outcome).observe(seconds)

    def observe_provider_retry(self, provider: str, operation: str) -> None:
        self.provider_retries.labels(provider, operation).inc()
