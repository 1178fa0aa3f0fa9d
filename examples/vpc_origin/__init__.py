"""Example: see originshield.toml in this directory."""
