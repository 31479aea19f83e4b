"""The HTTP training service (`hetrain serve`): receives job bundles, trains them, returns ciphertexts.

It holds PUBLIC MATERIAL ONLY — public contexts and ciphertexts — and refuses uploads that carry
a secret key. Training runs in separate server processes (``python -m hetrain.protocol.server_main``),
one at a time by default. FastAPI and uvicorn come with the optional extra
``pip install 'hetrain[service]'``; they are imported only by ``hetrain.service.app``, so
``import hetrain.service`` works without them.

    from hetrain.service.app import create_app     # needs the extra
"""
