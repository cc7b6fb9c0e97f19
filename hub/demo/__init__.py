"""`hub demo`: a whole study on loopback, with synthetic centers; not part of a production hub."""
