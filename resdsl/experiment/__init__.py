"""Experiments: a paper's table or figure as a file (``experiments/r-table6.exp``), the networks it trains and the
published figures they are compared with. ``parse.parse_experiment`` reads a file into ``model.Experiment``;
``catalog`` names the packaged files. Parsing and listing experiments import no torch."""
