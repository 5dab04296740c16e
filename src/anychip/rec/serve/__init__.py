"""`anychip rec serve`: a prediction server for a saved model (docs/rec-serving.md).

- `features.py`: a request's features from the feature store, as a padded batch
- `model.py`: the served model, captured per batch class; versions and the swap lock
- `apply.py`: model updates (rec.wire) made ready aside, then swapped in
- `batching.py`: the bounded queue and the inference worker (dynamic batching)
- `process.py`: the inference worker in a process of its own (the CLI's default)
- `metrics.py`: Prometheus text for GET /metrics
- `app.py`: the HTTP routes (starlette); `follow.py`: catching up from the Redis log
- `main.py`: the command line, run with uvicorn
"""
