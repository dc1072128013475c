"""The strategy search: which evasion works on this network, found by trying (docs/search.md)."""
