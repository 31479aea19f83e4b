"""`--force-insecure`: the one option that lets a command use CKKS parameters below 128-bit security.

Shared by `keygen`, `fit`, `encrypt` and `demo`. Without it those parameters (the INSECURE test rings
such as n4096-test, openfhe-test, openfhe-boot-test, or a chain SEAL/OpenFHE rates below 128 bits) are
refused with a message that names the option. With it every log line of the engine says INSECURE.
Keys made with it encrypt only with it again (KeyDir.check_forced). A server never needs the option:
it follows the data owner's choice recorded in the public context (ckks.owner_forced_insecure).
"""
from __future__ import annotations

import argparse

HELP = ("INSECURE: allow CKKS parameters below 128-bit security (test rings such as n4096-test, openfhe-test, "
        "openfhe-boot-test): for tests only, never for real data; every log line then says INSECURE")


def add_force_insecure_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force-insecure", action="store_true", help=HELP)

