"""Backends, one folder each; `runtime.device` discovers them by scanning this package."""
