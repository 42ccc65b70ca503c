"""The local edge: template.yaml's HttpApi routes served in-process (no containers)."""
