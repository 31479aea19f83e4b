"""hetrain: train classifiers on CKKS-encrypted data.

Layers (each imports only the ones below it):
  ckks      -> the only package that imports an HE library (SEAL via TenSEAL, plus an insecure simulator)
  circuits  -> encrypted linear algebra and polynomial approximations, backend-agnostic
  models    -> trainers, each with a plaintext NumPy twin
  protocol  -> client (holds the secret key) and server (never does), file formats
  cli       -> the `hetrain` command
"""

__version__ = "0.1.0"
