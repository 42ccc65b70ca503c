"""Isthmus shared layer: dialects, routing, services, ports and adapters.

Importable as ``isthmus`` from Lambda (/opt/python), from tests and from local_runtime.
"""

__version__ = "0.1.0"
