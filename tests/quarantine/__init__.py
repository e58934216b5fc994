"""The quarantine store, the release service and their command line."""
