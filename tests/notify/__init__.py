"""Notices to staff and ITSD."""
