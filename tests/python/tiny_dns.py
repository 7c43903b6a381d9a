#!/usr/bin/env python3
"""A tiny authoritative DNS server on loopback UDP, for tests of dns://SERVER/NAME:PORT targets.

usage: tiny_dns.py ZONE_FILE PORT_FILE

ZONE_FILE holds lines "NAME ADDRESS [ADDRESS...]" (IPv4 and IPv6 addresses); it is read again for
every query, so a test changes the answer by rewriting it. A and AAAA queries for a listed name get
its addresses of that family (TTL 0); other names get NXDOMAIN. The chosen port is written to
PORT_FILE (through a rename) once the socket is bound. Runs until killed.
"""
import ipaddress
import os
import socket
import struct
import sys


def read_zone(path):
    zone = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts:
                    zone[parts[0].lower().rstrip(".")] = [ipaddress.ip_address(a) for a in parts[1:]]
    except OSError:
        pass
    return zone


def parse_question(packet):
    labels, i = [], 12
    while packet[i] != 0:
        n = packet[i]
        labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, qclass = struct.unpack(">HH", packet[i + 1:i + 5])
    return ".".join(labels).lower(), qtype, qclass, packet[12:i + 5]


def answer(packet, zone):
    ident, flags = struct.unpack(">HH", packet[:4])
    name, qtype, _, question = parse_question(packet)
    rd = flags & 0x0100
    if name not in zone:
        return struct.pack(">HHHHHH", ident, 0x8000 | 0x0400 | rd | 3, 1, 0, 0, 0) + question
    version = {1: 4, 28: 6}.get(qtype)
    records = b""
    count = 0
    for a in zone[name]:
        if a.version == version:
            records += struct.pack(">HHHIH", 0xC00C, qtype, 1, 0, len(a.packed)) + a.packed
            count += 1
    return struct.pack(">HHHHHH", ident, 0x8000 | 0x0400 | rd, 1, count, 0, 0) + question + records


def main():
    zone_file, port_file = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    while True:
        packet, peer = s.recvfrom(4096)
        try:
            s.sendto(answer(packet, read_zone(zone_file)), peer)
        except (IndexError, struct.error, ValueError):
            pass  # not a query we understand: no answer


if __name__ == "__main__":
    main()
