"""The relay: the far end of domain-fronted tunnels (`detour relay`)."""
