"""Ports: the Protocols services depend on. Adapters (isthmus.adapters) implement them."""
