"""Sender authentication and DKIM signing."""
