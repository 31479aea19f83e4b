"""Entry point of the inference server process: ``python -m hetrain.protocol.infer_main QDIR ...``.

A module of its own, which nothing imports (see server_main.py for why); the command line is
built by ``inference.infer_argv``.
"""
import sys

from hetrain.protocol.inference import main

if __name__ == "__main__":
    sys.exit(main())
