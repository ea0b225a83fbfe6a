"""`python -m resdsl_cli`: the `resdsl` program, as the processes resdsl starts (torchrun's, --seeds') run it."""
from . import run

run()
