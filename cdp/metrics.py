"""Prometheus metrics shared by the apps (exposition comes with the observability work)."""

from prometheus_client import Counter

events_dropped = Counter(
    "cdp_events_dropped_total",
    "Events received but intentionally not stored",
    ["reason"],  # consent (no analytics consent), erased (identity was erased)
)

decisions_dropped = Counter(
    "cdp_decisions_dropped_total",
    "Decision log rows dropped because the buffer overflowed (the database was down)",
)
