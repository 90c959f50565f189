"""Scraping a /metrics endpoint in tests: GET it on 127.0.0.1 (no proxy) and parse it with prometheus_client's
own parser into samples keyed by (sample name, labels)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from relay_process import IO_TIMEOUT_S, LOOPBACK

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def scrape(port: int) -> tuple[str, Samples]:
    """GET /metrics; the content type and every sample, keyed by (name, labels)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{LOOPBACK}:{port}/metrics", timeout=IO_TIMEOUT_S) as resp:
        content_type = resp.headers["Content-Type"]
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return content_type, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample `name{labels}` (KeyError if absent)."""
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[Labels, float]:
    """Every sample called `name`, by its labels."""
    return {labels: v for (n, labels), v in samples.items() if n == name}
