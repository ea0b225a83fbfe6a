"""The resdsl trainer: trains any ``torch.nn.Module`` with a recipe (a plain dict), the way the papers did.

This package imports nothing from the rest of resdsl, so that ``resdsl compile --emit-trainer`` can ship these
very files beside a generated model, to run where resdsl is not installed.
"""
