"""The deploy/ files: systemd units."""
