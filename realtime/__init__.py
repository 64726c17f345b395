"""The call: wire protocol, sender, receiver, signaling, capture sources and sinks.

Only motion parameters cross the network per frame; the source state travels once. The wire
format lives in ``realtime.protocol`` (documented byte for byte in ``realtime/PROTOCOL.md``).
"""
