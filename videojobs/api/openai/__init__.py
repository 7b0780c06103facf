"""The OpenAI-compatible Videos API (/v1): the official openai SDK's ``client.videos`` and
``client.models`` against the same jobs, owners, limits, queue and daemons as /video/*."""
