"""Errors raised for bad input. Each carries a one-line message that names the offending key or file."""


class VlmattnError(Exception):
    """Base class: a problem with the user's input, reported as one line."""


class ConfigError(VlmattnError):
    """The configuration violates the schema or references something that does not exist."""


class InputError(VlmattnError):
    """An input file (image, checkpoint) is missing or unusable."""


class ModelError(VlmattnError):
    """A model cannot be loaded, is of an unsupported family, or cannot be instrumented."""


class SchemaVersionError(VlmattnError):
    """An HDF5 cache file was written with a schema version this release cannot read."""
