"""The profile explorer (web pages) and profile API: `portrait serve` (docs/explorer.md)."""
