"""The call: wire protocol, sender, receiver, signaling, capture sources and sinks.

Only motion parameters cross the network per frame; the source state travels once. The wire
format lives in ``realtime.protocol`` (documented byte for byte in ``realtime/PROTOCOL.md``).

One job per module:

* wire: ``messages``, ``motion_codec``, ``source_messages`` (source transfer: chunks and their assembly),
  ``source_payload`` (the SourceState as bytes, checked against the model), ``protocol``, ``errors``;
* both peers: ``control_link`` (sequence numbers, keepalive, goodbye, peer timeout), ``tasks`` (every
  task a peer starts, awaited when it stops);
* sender side: ``capture`` (camera, video, image folder, paced), ``motion_pipeline`` (tracker →
  crop → motion extractor → ``smoothing``), ``motion_stream`` (both on one worker thread, awaited
  frame by frame), ``sender`` (source upload, motion stream, resets);
* receiver side: the ``receiver`` package (``Receiver`` and its parts: ``pose``, ``source_inbox``,
  ``render_loop``, ``motion_gaps``), ``latest`` (latest-wins slot), ``sinks`` (virtual camera,
  window, file; the dedicated output thread);
* connection: ``transport`` (peer connection, channels, ICE host addresses, the in-process channel
  with its loss/reorder impairment), ``signaling`` (TCP or in-process offer/answer),
  ``http_signaling`` (``POST /offer`` with a bearer token), ``call`` (one side of a call, end to
  end; one call after another on the HTTP endpoint);
* ``webcam`` (``adasr cam``: the local virtual webcam, the motion stream rendered directly in one process),
  ``demo`` (both peers in one process), ``stats`` (wire-overhead model, latency summaries),
  ``clock``, ``settings`` (the names and defaults the command line shows).
"""
