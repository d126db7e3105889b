"""Threadsite's OpenAI-Assistants-compatible JSON API, served at /v1."""
