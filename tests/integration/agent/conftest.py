"""Agent tests use the session fixtures of tests/conftest.py (tiny_agent, smol_agent, ...)."""
