"""The clients: what talks to a server's HTTP APIs.

One transport (`transport`: JSON posted plain or streamed, request ids, `HttpError`, mid-stream error events)
under one adapter per API (`chat_completions`, `responses`, `messages`: each its request, its answer assembly,
its contract), all in the kit's terms (`terms`) and checked against the SDKs' types (`schemas`); `surfaces` picks
an adapter by name, `chat` is the chat client and replay helper the fixtures hand out. A request goes one way,
down that list (tests/test_layout.py). Also batches of requests (`batch`) and the load generator (`loadgen`). It
may import the GLM format and the records (a client records its requests for reproducers); never the engine.
"""
