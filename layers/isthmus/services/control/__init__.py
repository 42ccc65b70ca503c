"""The control plane: clusters and pools, nodes (enrollment, heartbeats), model sync, admin settings, health."""
