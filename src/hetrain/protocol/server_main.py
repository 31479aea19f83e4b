"""Entry point of the server process: ``python -m hetrain.protocol.server_main JOBDIR [options]``.

A module of its own, which nothing imports: ``python -m`` imports the package first, and
``hetrain.protocol`` imports server.py (through pipeline), so running server.py itself would
execute a second copy of an already imported module (runpy's "found in sys.modules ...
unpredictable behaviour" warning). Build the command with ``server.server_argv``.
"""
import sys

from hetrain.protocol.server import main

if __name__ == "__main__":
    sys.exit(main())
