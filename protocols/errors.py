"""One exception root for the whole platform; the CLIs turn these into messages and exit codes."""

from __future__ import annotations


class SurgFedError(Exception):
    """Root of every known error; the CLIs print it without a traceback."""

    exit_code = 1


class ConfigError(SurgFedError):
    """A config file (site.toml, protocol YAML, task definition) is missing or invalid."""


class ProtocolError(SurgFedError):
    """A study protocol is invalid, unknown or not approved."""


class BundleError(SurgFedError):
    """A ClientApp bundle (Flower FAB) is malformed, or clashes with an approved one."""


class DataError(SurgFedError):
    """Local data (videos, labels, manifest) is missing or inconsistent."""


class ModelError(SurgFedError):
    """The model directory is missing, incomplete or does not match the protocol."""


class ContractError(SurgFedError):
    """A message does not match the message contract (refused by the release gate)."""


class ContractVersionError(ContractError):
    """The peer speaks another version of the message contract."""


class EngineError(SurgFedError):
    """The site engine could not be reached or refused a request."""


class DeidError(SurgFedError):
    """De-identification could not be completed safely (the input is quarantined)."""


class UsageError(SurgFedError):
    """Bad command-line usage."""

    exit_code = 2
