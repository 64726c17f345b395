"""The call's voice: our own low-bitrate Opus on the sender, playout with a lip-sync clock on the receiver.

aiortc's own Opus encoder is fixed at 96 kbps stereo; a track whose ``recv`` returns ``av.Packet``s
is only packetised, so the sender encodes itself (libopus through PyAV, mono, at ``--audio-kbps``).

* ``opus``: the encoder and its options (bitrate, frame length), on the 48 kHz RTP clock;
* ``pcm``: 48 kHz mono 16-bit sources: the framing every source shares, and a file (anything PyAV
  reads) released in real time;
* ``devices``: the microphone and the speaker through PortAudio (``sounddevice``, the optional
  ``audio`` extra), each failing with a one-line reason where there is none;
* ``voice``: the sender's audio track (``OpusTrack``) and ``open_voice`` (file, microphone, or none);
* ``sync``: RTP timestamps of the received voice → the sender's wall clock, from RTCP sender reports;
* ``playout``: the receiver's consumer of the remote track (WAV file, speaker, or nowhere when there is
  no speaker), with the playout clock the face renderer is scheduled against.
* ``mixer``: several voices' playouts into one speaker or file (a group call), on the local clock.
"""
