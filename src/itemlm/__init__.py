"""itemlm: teach a frozen LLM about items and users from collaborative filtering."""

__version__ = "0.1.0"
