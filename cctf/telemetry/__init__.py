"""Logging (structlog, JSON lines) and metrics (OpenTelemetry, scraped in Prometheus format).

Both are process-wide and set up idempotently: call :func:`configure_logging` once from a CLI entry
point, and :func:`meter` wherever a component records metrics. :func:`start_prometheus` serves
``/metrics`` on a port; :func:`prometheus_text` renders the same text without a server (for tests and
the gateway). Secrets are never passed to the logger: log key ids, never key material or passwords.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, generate_latest, start_http_server

_lock = threading.Lock()
_provider: MeterProvider | None = None
_configured = False


def configure_logging(
    *, json: bool = True, level: str = "info", stream: TextIO | None = None
) -> None:
    """JSON lines (or human console lines) on ``stream`` (stderr by default)."""
    global _configured
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def _ensure_provider() -> MeterProvider:
    global _provider
    with _lock:
        if _provider is None:
            reader = PrometheusMetricReader()
            _provider = MeterProvider(metric_readers=[reader])
            metrics.set_meter_provider(_provider)
        return _provider


def meter(name: str) -> metrics.Meter:
    """A meter whose instruments are exported in Prometheus format."""
    return _ensure_provider().get_meter(name)


def prometheus_text() -> str:
    _ensure_provider()
    return generate_latest(REGISTRY).decode()


def start_prometheus(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread."""
    _ensure_provider()
    start_http_server(port, addr=addr)
