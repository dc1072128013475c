"""Subscriptions (docs/subscriptions.md): a URL that serves a list of servers, fetched on a
schedule through a working route; its nodes become routes of a pool the services name.

    formats.py   the list as served (base64 or plain lines of links, SIP008 JSON, Outline's
                 ssconf JSON, and through clash.py Clash YAML and sing-box JSON) -> nodes,
                 each checked; pure
    store.py     the last good list of each subscription, in the state directory (0600)
    (helper/config/subscription.py: `[[subscription]]`, and the pool's routes put into a
    Config, pure given the lists)
    pool.py      which of a pool's nodes are active (ranked from the health book, the best
                 `keep`; Router.candidates)
    guard.py     a node's server name checked at dial time (no private answers)
    fetch.py     one HTTPS GET of a list, read whole or refused as too large
    refresh.py   the schedule: fetch through a working route, keep the last good list,
                 switch the running engine to the new pool
    describe.py  what `config check` / `config show` say of the pools
"""
