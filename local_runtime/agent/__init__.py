"""The MLX node agent: an mlx-lm engine (prefix cache, thinking, tools, continuous batching) behind
the ``/agent/v1/*`` protocol of :mod:`isthmus_contracts.agent`."""
