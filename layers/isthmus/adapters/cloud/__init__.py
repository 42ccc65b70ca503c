"""Cloud provider backends (OpenAI and Anthropic wire protocols) and their resilient HTTP transport."""
