"""The protobuf wire format of ONNX files, read and written by hand: the runtime and the base install have no ``onnx``.

    for location in external_locations(Path("model.onnx").read_bytes()): ...   # external-data file names
    encode_field(2, "peak") + encode_field(1, 8)                              # a string field, a varint field

Only what edgecnn needs: walking a ModelProto for the ``location`` of external tensor data (so that the
runtime can refuse a model whose data lies outside its folder) and writing small messages field by field
(``edgecnn.peak`` builds its one-node MatMul model with it). Field numbers are those of onnx.proto.
"""

from __future__ import annotations

from collections.abc import Iterator

# Wire types (protobuf encoding): what follows a field's key.
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

WireValue = int | memoryview | None  # a varint, a length-delimited payload, or a skipped fixed-width value


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


# --------------------------------------------------------------------------------------------------- writing
def encode_varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint: 7 bits a byte, least significant first."""
    if value < 0:
        raise ValueError(f"varints here are non-negative, got {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_field(number: int, payload: bytes | str | int) -> bytes:
    """One field: an int as a varint, bytes or str (UTF-8) length-delimited (strings, sub-messages)."""
    if isinstance(payload, int):
        return encode_varint(number << 3 | VARINT) + encode_varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(len(data)) + data


# --------------------------------------------------------------------------------------------------- reading
def decode_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("not an ONNX model (truncated protobuf)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, WireValue]]:
    """(field number, wire type, value) of one message; length-delimited values as memoryviews, no copy."""
    mv = memoryview(buf)
    pos, end = 0, len(mv)
    while pos < end:
        key, pos = decode_varint(mv, pos)
        number, wire = key >> 3, key & 7
        value: WireValue
        if wire == VARINT:
            value, pos = decode_varint(mv, pos)
        elif wire == FIXED64:
            value, pos = None, pos + 8
        elif wire == LENGTH_DELIMITED:
            length, pos = decode_varint(mv, pos)
            value, pos = mv[pos : pos + length], pos + length
        elif wire == FIXED32:
            value, pos = None, pos + 4
        else:
            raise WireError(f"not an ONNX model (protobuf wire type {wire} at byte {pos})")
        if pos > end:
            raise WireError("not an ONNX model (truncated protobuf)")
        yield number, wire, value


def submessages(buf: bytes | memoryview, number: int) -> Iterator[memoryview]:
    """The payloads of every length-delimited field ``number`` (a repeated sub-message, or a string)."""
    for n, wire, value in iter_fields(buf):
        if n == number and wire == LENGTH_DELIMITED:
            assert isinstance(value, memoryview)
            yield value


def external_locations(model: bytes | memoryview) -> Iterator[str]:
    """The ``location`` of every tensor stored as external data, anywhere in a ModelProto."""
    # ModelProto.graph = 7, .functions = 25 (FunctionProto.node = 7).
    for graph in submessages(model, 7):
        yield from _graph_locations(graph)
    for function in submessages(model, 25):
        for node in submessages(function, 7):
            yield from _node_locations(node)


def _graph_locations(graph: memoryview) -> Iterator[str]:
    # GraphProto: node = 1, initializer = 5, sparse_initializer = 15 (values = 1, indices = 2).
    for n, wire, value in iter_fields(graph):
        if wire != LENGTH_DELIMITED:
            continue
        assert isinstance(value, memoryview)
        if n == 5:
            yield from _tensor_locations(value)
        elif n == 15:
            for sub in (1, 2):
                for tensor in submessages(value, sub):
                    yield from _tensor_locations(tensor)
        elif n == 1:
            yield from _node_locations(value)


def _node_locations(node: memoryview) -> Iterator[str]:
    # NodeProto.attribute = 5; AttributeProto: t = 5, g = 6, tensors = 10, graphs = 11.
    for attribute in submessages(node, 5):
        for n, wire, value in iter_fields(attribute):
            if wire != LENGTH_DELIMITED:
                continue
            assert isinstance(value, memoryview)
            if n in (5, 10):
                yield from _tensor_locations(value)
            elif n in (6, 11):
                yield from _graph_locations(value)


def _tensor_locations(tensor: memoryview) -> Iterator[str]:
    # TensorProto.external_data = 13: StringStringEntryProto(key = 1, value = 2).
    for entry in submessages(tensor, 13):
        kv = {n: bytes(v).decode("utf-8", "replace") for n, wire, v in iter_fields(entry)
              if wire == LENGTH_DELIMITED and isinstance(v, memoryview)}
        if kv.get(1) == "location":
            yield kv.get(2, "")


__all__ = ["WireError", "decode_varint", "encode_field", "encode_varint", "external_locations", "iter_fields",
           "submessages"]
