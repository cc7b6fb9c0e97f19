"""The contract between hub and sites: study protocols, tasks, wire messages, results schema."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("surgfed")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
