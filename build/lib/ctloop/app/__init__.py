"""Applications on top of the components: the `ctloop` command and the demo. Nothing imports this package."""
