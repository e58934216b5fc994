"""The review web app, its API and a real browser."""
