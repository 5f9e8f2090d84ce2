"""Device sources: each one turns a device's traffic into Readings for the pipeline."""

from edge_agent.sources.base import Emit, Reading, Source

__all__ = ["Emit", "Reading", "Source"]
