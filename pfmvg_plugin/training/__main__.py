"""``python -m pfmvg_plugin.training``: the training entry for launchers (``deepspeed --module``, ``torchrun -m``,
``accelerate launch -m``); see :mod:`pfmvg_plugin.training.launch`."""

import sys

from pfmvg_plugin.training.launch import main

sys.exit(main(prog="python -m pfmvg_plugin.training"))
