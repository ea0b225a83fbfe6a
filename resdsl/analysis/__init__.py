"""Analyses of trained runs: [R] Fig. 7's layer responses ("the outputs of each 3x3 layer, after BN and before
other nonlinearity (ReLU/addition)").

Importing this package imports neither torch nor matplotlib; the functions import them when called.
"""
from .figure import csv_text, draw_responses, figure_png, images_words, labelled, write_csv
from .responses import (ResponsesError, Run, RunResponses, find_layers, layer_responses, measure_run, open_run,
                        responses_of_run)

__all__ = ["ResponsesError", "Run", "RunResponses", "csv_text", "draw_responses", "figure_png", "find_layers",
           "images_words", "labelled", "layer_responses", "measure_run", "open_run", "responses_of_run", "write_csv"]
