"""torchtune's module path ``torchtune.config._errors``: `ConfigError` (tuner's, with ``errors``
listing each problem) and `InstantiationError` (a component that cannot be built)."""

from tuner.errors import ConfigError


class InstantiationError(ConfigError):
    """A config node cannot be turned into an object (no ``_component_``, or an unknown one)."""
