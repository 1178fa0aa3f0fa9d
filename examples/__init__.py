"""Runnable examples: one OriginShield configuration per deployment topology (see README.md)."""
