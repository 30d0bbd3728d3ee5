"""The engine: what boots, holds and inspects vLLM servers.

Server processes (`server`, `spawn`, `rootcause`, `probes`), the pool of servers a session shares (`pool`), recipes
and the configuration matrix (`recipe`, `matrix`, `catalog`, `tinymodel`), the host (`inventory`, `cluster`,
`gpulease`) and the checks before a boot (`preflight`). It may import the GLM format, the records and the clients;
it never imports measurement, the reports or the plugin (the run's `Settings` only for type annotations).
"""
