"""The pages and files jobq ships in jobq/static/ (the /docs page, the dashboard): read once, served as they are."""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping

from aiohttp import web


@functools.cache
def packaged(folder: str, name: str) -> bytes:
    """A file of jobq/static/``folder``, read once."""
    return (importlib.resources.files("jobq") / "static" / folder / name).read_bytes()


def page_response(folder: str, headers: Mapping[str, str]) -> web.Response:
    """The ``index.html`` of jobq/static/``folder``, with its security ``headers`` (its policy, above all)."""
    return web.Response(body=packaged(folder, "index.html"), content_type="text/html", charset="utf-8", headers=headers)


def file_response(folder: str, name: str, files: Mapping[str, str], cache_control: str) -> web.Response:
    """The file ``name`` of jobq/static/``folder`` if ``files`` (name -> media type) lists it, else 404."""
    media = files.get(name)
    if media is None:
        raise web.HTTPNotFound()
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": cache_control}
    return web.Response(body=packaged(folder, name), content_type=media, charset="utf-8", headers=headers)
