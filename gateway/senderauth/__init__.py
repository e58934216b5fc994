"""Sender authentication: DNS, SPF/DKIM/DMARC evaluation, Authentication-Results, DKIM signing."""
