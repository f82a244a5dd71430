#!/usr/bin/env python3
"""The scale lab's link shaper: what `tc netem` would do, in user space.

This machine's kernel has no netem (CONFIG_NET_SCH_NETEM is not set, and no
fq for EDT pacing either), so scripts/lab-net.sh routes every packet between
two lab nodes through a TUN device in the hub namespace, where this process
holds it for LATENCY ± JITTER ms (normal distribution, never reordering the
packets of one source → destination pair), drops LOSS % of them, and writes it
back for the kernel to route on to its destination. While the file CUT_FILE
exists, packets between the lab's halves (10.77.0.0/17 and 10.77.128.0/17) are
dropped: a partition that existing connections feel at once.

    lab-links.py --dev glt0 --latency 50 --jitter 10 --loss 0.5 --cut-file F
"""
import argparse
import fcntl
import heapq
import os
import random
import select
import struct
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def crosses_halves(packet: bytes) -> bool:
    """An IPv4 packet from one half of the lab to the other (bit 7 of the third octet)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return False
    return (packet[14] >= 128) != (packet[18] >= 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", required=True)
    parser.add_argument("--latency", type=float, required=True, help="one-way delay, ms")
    parser.add_argument("--jitter", type=float, default=0.0, help="standard deviation, ms")
    parser.add_argument("--loss", type=float, default=0.0, help="percent of packets dropped")
    parser.add_argument("--cut-file", required=True)
    args = parser.parse_args()

    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", args.dev.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(tun, False)
    latency, jitter, loss = args.latency / 1000, args.jitter / 1000, args.loss / 100
    pending = []  # (due, sequence, packet)
    last_due = {}  # (source, destination) -> due time of its latest packet: no reordering
    sequence = 0
    cut, cut_checked = False, 0.0
    while True:
        now = time.monotonic()
        if now - cut_checked > 0.1:
            cut, cut_checked = os.path.exists(args.cut_file), now
        timeout = min(0.1, max(0.0, pending[0][0] - now)) if pending else 0.1
        readable, _, _ = select.select([tun], [], [], timeout)
        if readable:
            for _ in range(1000):
                try:
                    packet = os.read(tun, 65536)
                except BlockingIOError:
                    break
                if loss and random.random() < loss:
                    continue
                if cut and crosses_halves(packet):
                    continue
                pair = packet[12:20]
                due = time.monotonic() + max(0.0, random.gauss(latency, jitter) if jitter else latency)
                due = max(due, last_due.get(pair, 0.0))
                last_due[pair] = due
                sequence += 1
                heapq.heappush(pending, (due, sequence, packet))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, packet = heapq.heappop(pending)
            try:
                os.write(tun, packet)
            except OSError:
                pass  # a full queue drops the packet, as a link would


if __name__ == "__main__":
    main()
