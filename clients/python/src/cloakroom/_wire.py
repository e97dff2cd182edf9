"""CRP1 framing and MessagePack bodies (docs/protocol.md, "Framing" and "Bodies"). No I/O."""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import msgpack

from ._errors import Internal

PROTOCOL = b"CRP1"
#: Replies larger than this are refused (the daemon's own request limit is 1 MiB; a
#: ``SESSIONS_OF`` of a user with many sessions can be larger, so replies get more room).
MAX_REPLY = 16 * 1024 * 1024

Body = Dict[str, Any]


def request_id(n: int) -> bytes:
    """The 8-byte request id of the n-th request: a big-endian 64-bit counter."""
    return struct.pack(">Q", n & 0xFFFF_FFFF_FFFF_FFFF)


def pack(body: Mapping[str, Any]) -> bytes:
    """One MessagePack map, shortest encodings, ``str`` for text and ``bin`` for bytes.

    Raises ``TypeError`` or ``ValueError`` for a value MessagePack cannot carry (a set, an
    object, an integer outside -2**63 .. 2**64-1).
    """
    try:
        data: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise type(e)(f"cannot encode as MessagePack: {e}") from e
    return data


def _pairs(pairs: List[Tuple[Any, Any]]) -> Dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a MessagePack map")
    return out


def unpack(data: bytes) -> Any:
    """Decodes exactly one MessagePack value (no trailing bytes)."""
    return msgpack.unpackb(
        data,
        raw=False,
        use_list=True,
        strict_map_key=False,
        object_pairs_hook=_pairs,
    )


def request_frames(rid: bytes, verb: str, body: Mapping[str, Any]) -> List[bytes]:
    """The five frames a DEALER sends: empty delimiter, ``CRP1``, id, verb, body."""
    return [b"", PROTOCOL, rid, verb.encode("ascii"), pack(body)]


def split_reply(frames: Sequence[bytes]) -> Optional[Tuple[bytes, bytes, bytes]]:
    """(request id, status, body bytes) of a reply as the DEALER receives it, or None for a
    message that is not a CRP1 reply (dropped by the caller)."""
    if len(frames) != 5 or frames[0] != b"" or frames[1] != PROTOCOL or len(frames[2]) != 8:
        return None
    return frames[2], frames[3], frames[4]


def decode_body(status: str, verb: str, data: bytes) -> Body:
    """A reply body: one map with string keys; anything else is a broken reply."""
    if len(data) > MAX_REPLY:
        raise Internal(f"reply of {len(data)} bytes exceeds {MAX_REPLY}", verb=verb)
    try:
        body = unpack(data)
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise Internal(f"{status} reply body does not decode: {e}", verb=verb) from e
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        raise Internal(f"{status} reply body is not a map with string keys", verb=verb)
    return body
