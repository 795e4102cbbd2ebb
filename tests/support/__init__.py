"""Helpers the tests share: sandbox processes, configs, CLI runs. No tests here."""
