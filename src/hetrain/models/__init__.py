"""Trainers. Each encrypted trainer has a plaintext twin running the same arithmetic in NumPy.

Trainers register themselves by name in ``hetrain.models.registry`` (see base.py for the contract).
"""
