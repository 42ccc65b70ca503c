"""Batches: one engine behind OpenAI's Batch API and Otari's inline shape (see model.py for the state machine)."""
