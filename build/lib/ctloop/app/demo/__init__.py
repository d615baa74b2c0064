"""The demo: the whole loop played on one machine (`ctloop demo`, `make demo`)."""
