"""Errors of the filter bank; each names the argument, key or file at fault and why."""

from __future__ import annotations

from edge_agent.errors import EdgeAgentError


class FilterError(EdgeAgentError):
    """Root of the filter bank's errors."""


class AheadOfTimeError(FilterError):
    """The ahead-of-time build of the kernels cannot be used (`reason` says why); the filter
    bank then runs numba's JIT, so this is logged, never raised to the agent."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"ahead-of-time filter kernels: {reason}")
        self.reason = reason


class FilterInputError(FilterError):
    """The arrays handed to the bank cannot be processed; the caller must fix them.

    `argument` names the parameter (`ts_ns`, `values`, ...) and `index` the first offending
    element when one element is at fault (else None).
    """

    def __init__(self, argument: str, reason: str, index: int | None = None) -> None:
        where = f"{argument}[{index}]" if index is not None else argument
        super().__init__(f"filter input {where}: {reason}")
        self.argument = argument
        self.index = index
        self.reason = reason


class UnknownMetricError(FilterError):
    """No preset exists for this metric: add a [metric] table to configs/filters.toml."""

    def __init__(self, metric: str, known: tuple[str, ...]) -> None:
        super().__init__(
            f"no filter preset for metric {metric!r} (presets exist for: {', '.join(known)})"
        )
        self.metric = metric
        self.known = known


class PresetError(FilterError):
    """A preset value is out of its valid range; the loader turns it into a ConfigError."""

    def __init__(self, metric: str, key: str, reason: str) -> None:
        super().__init__(f"filter preset {metric}.{key}: {reason}")
        self.metric = metric
        self.key = key
        self.reason = reason


class BaselineFileError(FilterError):
    """The baseline file cannot be read or written; baselines are relearnt if it stays broken."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"baseline file {path}: {reason}")
        self.path = path
        self.reason = reason
