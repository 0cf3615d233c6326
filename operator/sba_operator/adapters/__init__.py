"""Adapters to services outside Kubernetes (an LLM provider): I/O, driven by the handlers."""
