#!/usr/bin/env python3
"""An independent reader of TensorBoard event files, for tests/train/test_checkpoint.cpp.

Written from the format's documentation, sharing no code with Axon's writer: TFRecord framing
(uint64 length, uint32 masked CRC-32C of the length, data, uint32 masked CRC-32C of the data;
TensorFlow's tensorflow/core/lib/io/record_writer.cc) and the tensorflow.Event protocol buffer
(tensorflow/core/util/event.proto: wall_time = 1 double, step = 2 int64, file_version = 3
string, summary = 5 Summary{repeated Value value = 1; Value{tag = 1 string, simple_value = 2 float}}).
CRC-32C is computed bit by bit (no table), unlike the writer.

Prints one JSON object: {"file_version": ..., "scalars": [[step, tag, value], ...]}; exits 1 with a
message on any framing, checksum or encoding error.
"""
import json
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def fields(buf):
    """(field number, wire type, value) of a protobuf message; bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value = buf[pos:pos + 8]; pos += 8
        elif wire == 5:
            value = buf[pos:pos + 4]; pos += 4
        elif wire == 2:
            n, pos = varint(buf, pos)
            value = buf[pos:pos + n]; pos += n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def main(path):
    data = open(path, "rb").read()
    pos, out = 0, {"file_version": None, "scalars": []}
    while pos < len(data):
        if pos + 12 > len(data):
            sys.exit(f"{path}: truncated record header at byte {pos}")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked(header) != length_crc:
            sys.exit(f"{path}: bad length checksum at byte {pos}")
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if len(body) != length or masked(body) != body_crc:
            sys.exit(f"{path}: bad data checksum at byte {pos}")
        pos += 16 + length
        step = 0
        for field, wire, value in fields(body):
            if field == 2:
                step = value
            elif field == 3:
                out["file_version"] = value.decode()
            elif field == 5:
                for f, _, v in fields(value):
                    if f != 1:
                        continue
                    tag, simple = None, None
                    for vf, _, vv in fields(v):
                        if vf == 1:
                            tag = vv.decode()
                        elif vf == 2:
                            (simple,) = struct.unpack("<f", vv)
                    out["scalars"].append([step, tag, simple])
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
