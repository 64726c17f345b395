"""The call: wire protocol, sender, receiver, signaling, capture sources and sinks.

Only motion parameters cross the network per frame; the source state travels once. The wire
format lives in ``realtime.protocol`` (documented byte for byte in ``realtime/PROTOCOL.md``).

One job per module:

* wire: ``messages``, ``motion_codec``, ``source_codec``, ``protocol``, ``errors``;
* sender side: ``capture`` (camera, video, image folder, paced), ``motion_pipeline`` (tracker →
  crop → motion extractor → ``smoothing``), ``sender`` (source upload, motion stream, resets);
* receiver side: ``source_transfer`` (SourceState ↔ payload, checked), ``latest`` (latest-wins
  slot), ``receiver`` (validation, render thread), ``sinks`` (virtual camera, window, file);
* connection: ``transport`` (peer connection, channels, ICE host addresses), ``signaling``
  (TCP or in-process offer/answer), ``call`` (one side of a call, end to end);
* ``demo`` (both peers in one process), ``stats`` (wire-overhead model, latency summaries),
  ``clock``, ``cli`` (``adasr send``, ``receive``, ``demo``).
"""
