"""Clients and models for the external scanners: clamd and the adult-image models."""
