"""Group calls through Janus (Meetecho's WebRTC server, run as a separate program) and its VideoRoom plugin.

Janus is the selective forwarding unit: each participant publishes once (a data channel, and its
voice when it has one) and Janus forwards to every subscriber; we do not write an SFU. One job per
module:

* ``api``: Janus's HTTP API (sessions, plugin handles, transactions, the long-poll that delivers
  asynchronous events and keeps the session alive), Janus's errors as ``JanusError``;
* ``videoroom``: the VideoRoom requests (room exists/create, join as publisher, publish with an
  offer, join as subscriber and start with an answer) and the events that announce and withdraw feeds;
* ``participant``: ``RoomParticipant``, one person in a room: publishes one data channel (and an
  audio track), subscribes to every other feed as it comes and goes, and reports per feed its
  arrival (with its display name), each message and its departure. It moves bytes only: the call's
  messages (motion, source state) are layered on top.
"""
