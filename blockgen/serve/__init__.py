"""`blockgen serve`: an OpenAI-compatible HTTP server over one loaded model, with requests batched together and long
documents written as resumable jobs. Needs the `serve` extra (FastAPI, uvicorn).

    app = create_app(blockgen.load("default"), api_key="secret")   # an ASGI app; run(...) serves it with uvicorn
"""

from blockgen.serve.app import create_app, run

__all__ = ["create_app", "run"]
