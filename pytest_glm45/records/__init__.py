"""The records a verdict is made of: known failures, the judging of outcomes, reproducers, redaction, server logs.

`known_failures` reads the shipped and the user's vllm-<version>.toml files, `verdict` judges outcomes against them,
`reproducer` records the requests a check sends, `redaction` hides secrets, `serverlog` reads the server's request
log, `error_events` reads a failure reported mid-stream, `ids` holds the one syntax of patterns on ids. It may
import the GLM format only; the clients, the engine, measurement and the reports import it.
"""
