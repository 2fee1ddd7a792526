"""``faceguard serve``: a local web page and an HTTP API that protect photos as they are uploaded.

:mod:`faceguard.serve.app` builds the FastAPI application (routes, page, limits);
:mod:`faceguard.serve.jobs` keeps the jobs and their temporary folders; :mod:`faceguard.serve.pool`
runs the protection in worker processes, each loading its protector once; :mod:`faceguard.serve.uploads`
reads multipart uploads into the server's own temporary folder and refuses hostile ones. The page
(``faceguard/serve/page/``) is plain HTML, CSS and JavaScript served by the package: nothing comes
from a CDN. API reference: docs/serve.md.
"""
