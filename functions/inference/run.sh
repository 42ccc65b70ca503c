#!/bin/bash
# Entry point under Lambda Web Adapter (response-stream mode): the same ASGI app (routes.py), served by uvicorn.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT}:${PYTHONPATH}"
exec python -m uvicorn --host 127.0.0.1 --port "${PORT:-8080}" routes:app
