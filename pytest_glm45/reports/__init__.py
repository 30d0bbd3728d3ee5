"""The reports: what a run leaves behind and what reads it afterwards.

The report files (`report`, `report_html`), comparing two reports (`compare`), rechecking reproducers against a
server (`recheck`) and the evidence a known failure needs (`evidence`). It may import every wing below it (GLM
format, records, clients, engine, measurement); only the plugin and the CLI import it.
"""
