"""Runtime backends for the three deployable networks, behind one interface (``engines.base``)."""
