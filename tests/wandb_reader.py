"""Read back a W&B offline run file (`run-<id>.wandb`): a LevelDB-style log of protobuf `Record`s.

Layout: a 7-byte header (b":W&B", magic 0xBEE1 little-endian, version 0), then 32 KiB blocks of records, each
`crc32c (4) | length (2, LE) | type (1) | data`; type 1 = full, 2/3/4 = first/middle/last fragment. A block
tail shorter than a record header is zero padding.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def read_records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    out, pos, pending = [], HEADER, b""
    while pos + 7 <= len(data):
        block_left = BLOCK - (pos % BLOCK)
        if block_left < 7:
            pos += block_left
            continue
        _crc, length, rtype = struct.unpack_from("<IHB", data, pos)
        if rtype == 0 and length == 0:  # zero padding up to the end of the block
            pos += block_left
            continue
        chunk = data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if rtype == 1:
            payload = chunk
        elif rtype == 2:
            pending = chunk
            continue
        elif rtype == 3:
            pending += chunk
            continue
        elif rtype == 4:
            payload, pending = pending + chunk, b""
        else:
            raise ValueError(f"{path}: bad record type {rtype} at byte {pos}")
        rec = pb.Record()
        rec.ParseFromString(payload)
        out.append(rec)
    return out


def history(path: str | Path) -> list[dict]:
    """Every logged history row as {key: value}."""
    rows = []
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append({(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in rec.history.item})
    return rows


def run_ids(path: str | Path) -> set[str]:
    return {rec.run.run_id for rec in read_records(path) if rec.WhichOneof("record_type") == "run"}
