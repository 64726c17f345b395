"""A group call through an SFU (Janus's VideoRoom): publish once, render every other face in one grid, hear
every other voice in one mix.

* ``room``: ``GroupCall``, the participant, its publisher and every remote face, on the event loop;
* ``publisher``: ``Publisher``, our voice and motion out, our source state again for each late subscriber;
* ``remote_face``: ``RemoteFace``, one remote participant's messages checked, its pose and source state;
* ``voices``: ``RoomVoices``, every remote voice through its own jitter buffer, mixed to the speaker or a file;
* ``face_queue``: ``FaceQueue``, the newest frame per face, handed out round-robin;
* ``grid_renderer``: ``GridRenderer``, the one render thread for every face;
* ``grid``: ``Grid``, the tiles composed into one picture for the sink.
"""
