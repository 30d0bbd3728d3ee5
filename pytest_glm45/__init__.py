"""pytest-glm45: a pytest plugin and conformance kit for serving GLM-4.5 with vLLM."""

from __future__ import annotations

__version__ = "0.1.0"
