"""Sentence embeddings on the node agent: a BERT encoder in MLX, its model directories (fetched from PyPI or
tiny random ones), and the ``/agent/v1/embeddings`` route's request handling."""
