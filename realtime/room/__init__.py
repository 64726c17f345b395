"""A group call through an SFU (Janus's VideoRoom): publish once, render every other face in one grid.

* ``room``: ``GroupCall``, the participant, its publisher and every remote face, on the event loop;
* ``publisher``: ``Publisher``, our voice and motion out, our source state again for each late subscriber;
* ``remote_face``: ``RemoteFace``, one remote participant's messages checked, its pose and source state;
* ``face_queue``: ``FaceQueue``, the newest frame per face, handed out round-robin;
* ``grid_renderer``: ``GridRenderer``, the one render thread for every face;
* ``grid``: ``Grid``, the tiles composed into one picture for the sink.
"""
