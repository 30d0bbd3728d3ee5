"""The GLM format: what GLM-4.5 speaks, with no server or client in sight.

Its special tokens and rendering (`glm_format`), the tool-call format (`toolcall`), the parsers a server names
(`parsers`) and the replay scripts the replay processor follows (`replay`). It imports nothing else of the kit:
every other wing may import it.
"""
