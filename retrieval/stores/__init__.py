"""Vector-store backends behind one interface (search modes, filters, upserts)."""
