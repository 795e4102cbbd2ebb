"""Talking to the Flextell API: HTTP client, OAuth tokens, login, transport rules, rate headers."""
