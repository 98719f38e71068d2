"""Shared library: engine, table catalog and writer, configuration, CLI."""
