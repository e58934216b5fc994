"""Faults and processes: next hop, store, scanner and PostgreSQL failures, kills, the soak."""
