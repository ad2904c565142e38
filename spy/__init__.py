"""`spy`: the command line, the composition root that builds settings, the engine and the bots."""
