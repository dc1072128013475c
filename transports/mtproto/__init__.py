"""MTProto's outer layers, sans-IO: the obfuscated2 init and its ciphers, the transports'
packet framing, the unencrypted first messages of a key exchange, and the table of
Telegram's data centres and their web endpoints. The `tgws` layer (transports/tgws.py), the
probes and the lab's mock servers are built from these; so will an MTProto proxy be."""

from .dcs import DEFAULT_DCS, DataCentre, DcTable, WebEndpoint, WebNames
from .framing import MAX_PACKET, FramingError, PacketReader, PacketSplitter, encode_packet
from .obfuscated2 import (
    INIT_LEN,
    Header,
    InitError,
    Keystream,
    Obfuscation,
    Tag,
    TransportKind,
    accept,
    classify,
    dc_field,
    initiate,
)

__all__ = [
    "DEFAULT_DCS",
    "INIT_LEN",
    "MAX_PACKET",
    "DataCentre",
    "DcTable",
    "FramingError",
    "Header",
    "InitError",
    "Keystream",
    "Obfuscation",
    "PacketReader",
    "PacketSplitter",
    "Tag",
    "TransportKind",
    "WebEndpoint",
    "WebNames",
    "accept",
    "classify",
    "dc_field",
    "encode_packet",
    "initiate",
]
