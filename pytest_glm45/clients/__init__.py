"""The clients: what talks to a server's HTTP APIs.

The chat client (`chat`), the API surfaces and their contracts (`surfaces`, `schemas`), answer assembly from
responses and streams (`answers`), batches of requests (`batch`) and the load generator (`loadgen`). It may import
the GLM format and the records (a client records its requests for reproducers); it never imports the engine.
"""
