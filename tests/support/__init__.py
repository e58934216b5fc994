"""Helpers the tests share: real peers, mail builders, fixtures."""
