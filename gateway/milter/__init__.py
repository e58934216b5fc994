"""The milter front end: codec.py (the protocol's wire format) and session.py (the asyncio server)."""
