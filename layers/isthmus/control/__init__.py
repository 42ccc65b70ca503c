"""The control plane's domain: clusters, pools, nodes, settings, CoeOS config (pydantic records)."""
