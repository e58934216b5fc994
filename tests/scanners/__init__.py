"""The scanners: the clamd client and attachments end to end through a real clamd."""
