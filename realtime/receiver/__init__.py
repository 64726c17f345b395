"""The receiving side of a call, in parts with one job each.

* ``receiver``: ``Receiver``, the channels' messages routed to the parts, on the event loop;
* ``pose``: ``PoseState``, which pose to render (reference pose, resets, a lost face);
* ``source_inbox``: ``SourceInbox``, source transfers → checked SourceStates, refusals, the deadline;
* ``render_loop``: ``RenderLoop``, the render thread (latest wins) and the sink;
* ``motion_gaps``: ``MotionGapWatch``, gaps in the motion stream.

The control link (sequence numbers, keepalive, goodbye, peer timeout) is ``realtime.control_link``,
shared with the sender.
"""

from realtime.receiver.pose import FaceLostPolicy
from realtime.receiver.receiver import DECODE_THREAD, Receiver, ReceiverOptions, ReceiverStats

__all__ = ["DECODE_THREAD", "FaceLostPolicy", "Receiver", "ReceiverOptions", "ReceiverStats"]
