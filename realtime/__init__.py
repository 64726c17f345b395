"""The call: wire protocol, sender, receiver, signaling, capture sources and sinks.

Only motion parameters cross the network per frame; the source state travels once. The wire
format lives in ``realtime.protocol`` (documented byte for byte in ``realtime/PROTOCOL.md``).

One job per module:

* wire: ``messages``, ``motion_codec``, ``source_messages`` (source transfer: chunks and their assembly),
  ``source_payload`` (named arrays as bytes), ``protocol``, ``errors`` (none imports torch);
  ``source_state_codec`` (a SourceState or portrait ↔ payload, checked against the model);
* both peers: ``control_link`` (sequence numbers, keepalive, goodbye, peer timeout), ``tasks`` (every
  task a peer starts, awaited when it stops), ``wire_meter`` (bytes on the wire, voice and data apart);
* voice: the ``audio`` package (our Opus encoder and its track, file and microphone sources, the remote
  voice's jitter buffer, playout and sender-report clock), ``lip_sync`` (faces held until their voice plays);
* sender side: ``capture`` (camera, video, image folder, paced), ``motion_pipeline`` (tracker →
  crop → motion extractor → ``smoothing``), ``motion_stream`` (both on one worker thread, awaited
  frame by frame), ``sender`` (source upload, motion stream, resets);
* receiver side: the ``receiver`` package (``Receiver`` and its parts: ``pose``, ``source_inbox``,
  ``render_loop``, ``motion_gaps``), ``latest`` (latest-wins slot), ``sinks`` (virtual camera,
  window, file; the dedicated output thread);
* connection: ``transport`` (peer connection, channels, ICE host addresses, the in-process channel
  with its loss/reorder impairment), ``ice`` (STUN/TURN, relay-only, the selected pair),
  ``signaling`` (TCP or in-process offer/answer), ``http_signaling`` (``POST /offer`` over HTTPS with a
  bearer token), ``tls_identity`` (the receiver's kept certificate and its pin), ``call`` (one side of a
  call, end to end; one call after another on the HTTP endpoint);
* sender side also: ``render_rate`` (send at the rate the receiver renders);
* group calls: the ``janus`` package (Janus's HTTP API and VideoRoom, one participant's connections) and
  the ``room`` package (``adasr room``: publisher, per-feed state, one render queue, the grid);
* ``webcam`` (``adasr cam``: the local virtual webcam, the motion stream rendered directly in one process),
  ``demo`` (both peers in one process), ``stats`` (wire-overhead model, latency summaries),
  ``clock``, ``settings`` (the names and defaults the command line shows).
"""
