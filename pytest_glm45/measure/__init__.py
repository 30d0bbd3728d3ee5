"""Measurement: numbers taken from running servers and the limits they are judged by.

Throughput and its thresholds (`throughput`, `thresholds`, `sidebyside`), logprob parity (`parity`,
`parity_record`, `parity_session`, `parity_html`) and accuracy limits (`accuracy`). It may import the GLM format,
the records, the clients and the engine; the reports and the plugin import it.
"""
