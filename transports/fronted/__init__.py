"""The domain-fronted tunnel: a WebSocket to a detour relay behind a CDN front, and inside
it standard TLS 1.3 between detour and the relay (the relay's certificate pinned, detour
authenticated by a client certificate), carrying one connection's bytes.

    detour --TCP--> CDN front (TLS, SNI = front name)
           --HTTP/1.1 WebSocket upgrade, Host = relay host, secret path, access token-->
           relay --TLS 1.3 inside the WebSocket (pinned, client certificate)-->
           CONNECT host:port --> the service

The CDN sees the front name, the relay's host and path, and ciphertext; the censor sees a
TLS connection to the front. See docs/relay.md and docs/threat-model.md.
"""
