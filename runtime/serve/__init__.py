"""`edgecnn serve` and `app.pyz --serve`: the runtime's classifier over HTTP (Starlette on uvicorn).

    from edgecnn.runtime.serve.app import ServeOptions, create_app, serve

Imported only by the serve commands: starlette, uvicorn, prometheus_client and python-multipart are
needed here and nowhere else in the runtime.
"""
