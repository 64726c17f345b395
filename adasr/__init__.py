"""AdaSR: adaptive super-resolution for one-shot talking-head generation (arXiv 2403.15944).

A clean-room implementation of the released AdaSR / face-vid2vid (SPADE) model, with cached
inference, face tracking and the tooling around it.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
