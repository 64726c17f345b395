"""Runtime backends for the three deployable networks, behind one interface (``adasr.inference.Backend``),
the talking head over any of them (``talking_head``) and the export manifest they read (``manifest``)."""
