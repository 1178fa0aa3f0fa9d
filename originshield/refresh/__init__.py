"""Keeping the served ip-ranges document fresh: the refresher and its parts (private modules)."""
