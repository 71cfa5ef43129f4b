"""`edgecnn serve` and `app.pyz --serve`: the runtime's classifier over HTTP (Starlette on uvicorn).

    from edgecnn.runtime.serve.app import create_app          # the ASGI app (routes.py, request.py)
    from edgecnn.runtime.serve.options import ServeOptions
    from edgecnn.runtime.serve.server import serve            # uvicorn until SIGTERM

Imported only by the serve commands: starlette, uvicorn, prometheus_client and python-multipart are
needed here and nowhere else in the runtime.
"""
