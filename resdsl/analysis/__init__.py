"""Analyses of trained runs: [R] Fig. 7's layer responses ("the outputs of each 3x3 layer, after BN and before
other nonlinearity (ReLU/addition)").

Importing this package imports neither torch nor matplotlib; the functions import them when called.
"""
from .responses import (ResponsesError, Run, RunResponses, draw_responses, find_layers, images_words, labelled,
                        layer_responses, measure_run, open_run, responses_of_run, write_csv)

__all__ = ["ResponsesError", "Run", "RunResponses", "draw_responses", "find_layers", "images_words", "labelled",
           "layer_responses", "measure_run", "open_run", "responses_of_run", "write_csv"]
