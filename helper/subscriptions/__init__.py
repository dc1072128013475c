"""Subscriptions (docs/subscriptions.md): a URL that serves a list of servers, fetched on a
schedule through a working route; its nodes become routes of a pool the services name.

    formats.py   the list as served (base64 or plain lines of links, SIP008 JSON, Outline's
                 ssconf JSON) -> nodes, each checked; pure
    store.py     the last good list of each subscription, in the state directory (0600)
    (helper/config/subscription.py: `[[subscription]]`, and the pool's routes put into a
    Config, pure given the lists)
    pool.py      which of a pool's nodes are active (ranked from the health book)
    refresh.py   the schedule: fetch through a working route, keep the last good list,
                 switch the running engine to the new pool
"""
