"""Tenancy and money: keys, users, budgets, pricing, usage, the inference gate (admit, hold, settle) and its ledger
plumbing."""
