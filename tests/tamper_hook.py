"""Imported by the server process (``--trainer-module tamper_hook``): a dishonest server. From the
HETRAIN_TEST_TAMPER_STEP-th refresh on, it adds 0.5 to every value of the state it sends to the data
owner (well-formed encryptions of wrong values: anyone with the public key can make them)."""
import os

from hetrain.protocol import refresh_channel

_FROM = int(os.environ.get("HETRAIN_TEST_TAMPER_STEP", "2"))
_call, _evaluate = refresh_channel.ServerChannel.__call__, refresh_channel.ServerChannel.evaluate


def _tampered(channel, state, step):
    if step is None or step < _FROM:
        return state
    return {k: ([channel.engine.add(ct, 0.5) for ct in v] if isinstance(v, list) else channel.engine.add(v, 0.5))
            for k, v in state.items()}


def __call__(self, state, step=None):
    return _call(self, _tampered(self, state, step), step)


def evaluate(self, state, step, epoch, refresh=False):
    return _evaluate(self, _tampered(self, state, step), step, epoch, refresh)


refresh_channel.ServerChannel.__call__ = __call__
refresh_channel.ServerChannel.evaluate = evaluate
