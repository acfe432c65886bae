"""Example jobs used by the README and its tests."""
