"""The OpenAPI 3.1 document of the HTTP API, built from the app's routes and the pydantic models they use.

Each handler declares what it takes and answers with :func:`documented`: its tag, its answers by
status (a model from jobq/models.py, another media type, or no body), its request body and query
models, and the problems only it answers (404, 409, 503...). The problems every route of a kind can
answer are added here: 400 (a request that cannot be parsed) and 413 everywhere; 400, 413, 415 and
422 with a body; 422 with query or queue-name parameters; 401 and 403 behind a token; 403 for a write
(a browser's from another site). Who may call a route comes from its jobq/auth.py marker: a public
route has no security, the rest need the HTTP bearer scheme with a token of the roles it names
(``x-jobq-roles``). Route docstrings are the summaries and descriptions; schemas are the models' own
JSON Schema (2020-12, the dialect of OpenAPI 3.1), never a copy kept beside them.

The document is built from the app's router the first time it is asked for and kept for that app,
so every route served is in it; a route whose handler declares nothing stops the build with an
error naming it (tests/test_openapi.py builds it for the app ``create_app`` makes). Every GET route
also answers HEAD, which the document does not list.

``GET /docs`` is Swagger UI, from files vendored into jobq/static/docs (see its README.md).
"""

from __future__ import annotations

import inspect
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from pydantic_core import to_json

from jobq import __version__
from jobq.auth import ANY_ROLE, PUBLIC, UNSAFE_METHODS, Role, access_of
from jobq.errors import REALM
from jobq.models import Name, Problem
from jobq.problems import CONTENT_TYPE as PROBLEM_CONTENT_TYPE

OPERATION_ATTRIBUTE = "jobq_operation"
SCHEMAS = "#/components/schemas/"
BEARER = "bearerAuth"
SWAGGER_UI_VERSION = "5.35.0"  # of the vendored files in jobq/static/docs (package.json pins it)

H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Reply:
    """One success answer of a route: what it means, and its body (a model, other media, or none)."""

    description: str
    model: type[BaseModel] | None = None
    media: Mapping[str, Mapping[str, Any]] | None = None  # a body that is not a JSON model: media type -> schema
    headers: Mapping[str, str] = field(default_factory=dict)  # header name -> what it says
    links: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # OpenAPI link objects, by name


@dataclass(frozen=True, slots=True)
class Operation:
    """What a handler declares for the document (see :func:`documented`)."""

    tag: str
    answers: Mapping[int, Reply]
    body: type[BaseModel] | None
    query: tuple[type[BaseModel], ...]
    problems: Mapping[int, str]


def documented(
    tag: str,
    answers: Mapping[int, Reply],
    *,
    body: type[BaseModel] | None = None,
    query: tuple[type[BaseModel], ...] = (),
    problems: Mapping[int, str] | None = None,
) -> Callable[[H], H]:
    """Declare a handler's operation: its answers by status, body and query models, and its own problems.

    ``problems`` maps the statuses only this route answers (404, 409, 503, 507...) to when; the ones
    every route of its kind answers are added by the document (see the module docstring). Costs
    nothing per request: it only marks the handler.
    """
    operation = Operation(tag, dict(answers), body, tuple(query), dict(problems or {}))

    def mark(handler: H) -> H:
        setattr(handler, OPERATION_ATTRIBUTE, operation)
        return handler

    return mark


def links(
    operations: Mapping[str, str], parameters: Mapping[str, str], body: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """OpenAPI links from an answer to the operations that take its values.

    ``operations`` maps each link's name to its target: an operationId (a handler's name), or a
    ``METHOD /path`` (for an alias route, whose operationId is made up). ``parameters`` and ``body``
    hold runtime expressions such as ``$response.body#/id``.
    """
    found: dict[str, dict[str, Any]] = {}
    for name, target in operations.items():
        method, _, path = target.partition(" ")
        if path:
            pointer = path.replace("~", "~0").replace("/", "~1")
            link: dict[str, Any] = {"operationRef": f"#/paths/{pointer}/{method.lower()}"}
        else:
            link = {"operationId": target}
        link["parameters"] = dict(parameters)
        if body is not None:
            link["requestBody"] = dict(body)
        found[name] = link
    return found


def operation_of(handler: Any) -> Operation | None:
    return getattr(handler, OPERATION_ATTRIBUTE, None)


class UndocumentedRoute(LookupError):
    """A route whose handler has no :func:`documented` declaration, or a path parameter the document cannot describe."""


TAGS = [
    {"name": "jobs", "description": "Enqueue, read, list, cancel, re-run and delete jobs."},
    {"name": "queues", "description": "Queues: counts, pause, resume, clear, peek."},
    {"name": "workers", "description": "The worker protocol: lease, heartbeat, settle, log and report progress."},
    {"name": "schedules", "description": "Jobs enqueued at each tick of a cron expression or an interval."},
    {"name": "workflows", "description": "Jobs that wait for other jobs: graphs, groups with a callback, chains."},
    {"name": "server", "description": "Health, statistics and metrics."},
    {"name": "docs", "description": "This document and its interactive page."},
]

# Every status a problem can answer, what it means where a route does not say, and its headers.
PROBLEM_MEANINGS: Mapping[int, str] = {
    400: "malformed: the HTTP request cannot be parsed",
    401: "no bearer token, or one jobq does not know (jobq runs with tokens)",
    403: "the token's role may not call this route",
    404: "not found",
    409: "conflict",
    413: "the body is larger than --body-limit",
    415: "the body's Content-Encoding is not supported (send it as is, or gzip or deflate)",
    422: "invalid fields, each named in errors[]",
    503: "unavailable; try again after Retry-After",
    507: "the store's disk is full: nothing was stored; try again after Retry-After",
}
PROBLEM_HEADERS: Mapping[int, Mapping[str, str]] = {
    401: {"WWW-Authenticate": f'Bearer realm="{REALM}" (with error="invalid_token" for an unknown token)'},
    403: {"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
    503: {"Retry-After": "seconds to wait before trying again"},
    507: {"Retry-After": "seconds to wait before trying again"},
}
CROSS_SITE_WRITE = "a browser's write from another site, or any browser's with --ui read-only (jobq/auth.py)"
BODY_PROBLEMS: Mapping[int, str] = {
    400: "malformed: the body is not JSON (or nests too deep, or holds a number JSON cannot carry), "
    "or the HTTP request cannot be parsed",
    413: PROBLEM_MEANINGS[413],
    415: PROBLEM_MEANINGS[415],
    422: PROBLEM_MEANINGS[422],
}

# -- the docs page's files: jobq/static/docs ----------------------------------
DOCS_FILES: Mapping[str, str] = {  # what GET /docs/{file} serves, with its media type
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "init.js": "text/javascript",
}
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The Content-Security-Policy of GET /docs: its own scripts and styles only, nothing inline, no framing."""


# The path parameters routes use: their schemas (pydantic's, for the patterns handlers check) and meanings.
PATH_PARAMETERS: Mapping[str, tuple[Mapping[str, Any], str]] = {
    "id": ({"type": "string", "minLength": 1}, "the job's id"),
    "name": (TypeAdapter(Name).json_schema(), "the queue's name"),
    "file": ({"type": "string", "enum": sorted(DOCS_FILES)}, "a file of the page"),
    "asset": ({"type": "string", "minLength": 1}, "a file of the dashboard"),
}

# -- the document ---------------------------------------------------------------
_documents: weakref.WeakKeyDictionary[web.Application, bytes] = weakref.WeakKeyDictionary()


def document_json(app: web.Application) -> bytes:
    """The OpenAPI document of ``app`` as JSON, built on first use and kept for the app."""
    document = _documents.get(app)
    if document is None:
        document = _documents[app] = to_json(build_document(app))
    return document


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route ``app`` serves (UndocumentedRoute for one that declares nothing)."""
    routes = _routes(app)
    schemas = _Schemas([(op.body, "validation") for _, _, _, op in routes if op.body is not None])
    for _, _, _, op in routes:
        schemas.add(*[(model, "validation") for model in op.query])
        schemas.add(*[(reply.model, "serialization") for reply in op.answers.values() if reply.model is not None])
    schemas.add((Problem, "serialization"))
    components = schemas.build()
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for method, path, handler, op in routes:
        operation_id = _operation_id(handler.__name__, method, path, operation_ids)
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, handler, op, operation_id, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jobq",
            "version": __version__,
            "summary": "A job-queue server: jobs over HTTP, run by workers in the server or elsewhere.",
            "description": INFO_DESCRIPTION,
        },
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A jobq token (JOBQ_TOKEN, JOBQ_WORKER_TOKEN, JOBQ_ADMIN_TOKEN or --tokens-file), "
                    "with role client, worker or admin. Without tokens configured jobq needs none.",
                }
            },
        },
    }


INFO_DESCRIPTION = """\
Bodies are JSON; errors are RFC 9457 `application/problem+json` (`type`, `title`, `status`, `detail`,
and `errors[]` naming each invalid field). Timestamps are RFC 3339 UTC; durations are seconds.
Request fields are taken as their types are, never converted: an integer is written without a
fraction (`3`, not `3.0`), a number is not a string.

With tokens, each route needs a bearer token of the roles in its description (an admin token may
call every route); `/health`, `/openapi.json` and `/docs` are public. Every GET route also answers
HEAD.
"""


def _routes(app: web.Application) -> list[tuple[str, str, Callable[..., Any], Operation]]:
    """(method, path template, handler, operation) of every route of ``app``, HEAD left out."""
    found = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        path = resource.canonical
        handler = route.handler
        if route.method == "HEAD" and any(
            other.method == "GET" and other.handler is handler for other in resource
        ):  # aiohttp's HEAD twin of a GET route
            continue
        op = operation_of(handler)
        if op is None:
            raise UndocumentedRoute(
                f"{route.method} {path}: its handler declares nothing for /openapi.json; add @documented(...)"
            )
        found.append((route.method, path, handler, op))
    return found


class _Schemas:
    """The models' JSON Schemas, gathered under components/schemas in one pass (shared definitions once)."""

    def __init__(self, models: list[tuple[type[BaseModel], JsonSchemaMode]]) -> None:
        self._models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
        self._refs: dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]] = {}
        self._defs: dict[str, Any] = {}
        self.add(*models)

    def add(self, *models: tuple[type[BaseModel], JsonSchemaMode]) -> None:
        for model in models:
            if model not in self._models:
                self._models.append(model)

    def build(self) -> dict[str, Any]:
        refs, top = models_json_schema(self._models, ref_template=SCHEMAS + "{model}")
        self._refs = dict(refs)
        self._defs = top.get("$defs", {})
        return self._defs

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return self._refs[(model, mode)]

    def definition(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        name = self.ref(model, mode)["$ref"].removeprefix(SCHEMAS)
        return self._defs[name]  # type: ignore[no-any-return]


def _operation_id(name: str, method: str, path: str, taken: set[str]) -> str:
    """The handler's name; for a second route to the same handler (an alias), the method and path too."""
    operation_id = name
    if operation_id in taken:
        operation_id = f"{name}_{method.lower()}_" + "_".join(re.findall(r"[A-Za-z0-9]+", path))
    taken.add(operation_id)
    return operation_id


def _operation(
    method: str, path: str, handler: Callable[..., Any], op: Operation, operation_id: str, schemas: _Schemas
) -> dict[str, Any]:
    summary, description = _docstring(handler)
    roles = access_of(handler)
    if roles is not PUBLIC:
        named = ", ".join(sorted(roles - {Role.ADMIN}))
        who = "any role" if roles == ANY_ROLE else f"{named} (or admin)" if named else "admin"
        description = f"{description}\n\nToken: {who}.".strip()
    operation: dict[str, Any] = {
        "tags": [op.tag],
        "summary": summary,
        "operationId": operation_id,
    }
    if description:
        operation["description"] = description
    parameters = _path_parameters(method, path) + [
        parameter for model in op.query for parameter in _query_parameters(model, schemas)
    ]
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.ref(op.body, "validation")}},
        }
    operation["responses"] = _responses(method, path, op, roles, schemas)
    if roles is PUBLIC:
        operation["security"] = []
    else:
        operation["security"] = [{BEARER: []}]
        operation["x-jobq-roles"] = sorted({*roles, Role.ADMIN}) if roles != ANY_ROLE else sorted(Role)
    return operation


def _docstring(handler: Callable[..., Any]) -> tuple[str, str]:
    """A handler's docstring as a summary (its first paragraph, on one line, plain) and a description (the rest).

    The description is CommonMark: reST's double backquotes become single ones; the summary drops them.
    """
    text = inspect.getdoc(handler) or ""
    first, _, rest = text.partition("\n\n")
    return " ".join(first.replace("``", "").split()), rest.strip().replace("``", "`")


def _path_parameters(method: str, path: str) -> list[dict[str, Any]]:
    parameters = []
    for name in re.findall(r"\{(\w+)\}", path):
        if name not in PATH_PARAMETERS:
            raise UndocumentedRoute(f"{method} {path}: path parameter {{{name}}} is not in PATH_PARAMETERS")
        schema, description = PATH_PARAMETERS[name]
        parameters.append({"name": name, "in": "path", "required": True, "description": description, "schema": schema})
    return parameters


def _query_parameters(model: type[BaseModel], schemas: _Schemas) -> list[dict[str, Any]]:
    """One parameter per field of a query model (an absent parameter is None: the null branch is left out)."""
    definition = schemas.definition(model, "validation")
    required = set(definition.get("required", ()))
    parameters = []
    for name, schema in definition["properties"].items():
        schema = dict(schema)
        description = schema.pop("description", None)
        schema.pop("title", None)
        branches = schema.get("anyOf")
        if branches is not None:
            kept = [branch for branch in branches if branch != {"type": "null"}]
            del schema["anyOf"]
            schema = {**(kept[0] if len(kept) == 1 else {"anyOf": kept}), **schema}
            if schema.get("default", ...) is None:
                del schema["default"]
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": schema}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _responses(
    method: str, path: str, op: Operation, roles: frozenset[Role] | None, schemas: _Schemas
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, reply in sorted(op.answers.items()):
        response: dict[str, Any] = {"description": reply.description}
        if reply.model is not None:
            response["content"] = {"application/json": {"schema": schemas.ref(reply.model, "serialization")}}
        elif reply.media is not None:
            response["content"] = {media: {"schema": dict(schema)} for media, schema in reply.media.items()}
        if reply.headers:
            response["headers"] = _headers(reply.headers)
        if reply.links:
            response["links"] = {name: dict(link) for name, link in reply.links.items()}
        responses[str(status)] = response
    problem_schema = schemas.ref(Problem, "serialization")
    for status, meaning in sorted(_problems(method, path, op, roles).items()):
        response = {"description": meaning, "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_schema}}}
        if status in PROBLEM_HEADERS:
            response["headers"] = _headers(PROBLEM_HEADERS[status])
        responses[str(status)] = response
    return responses


def _problems(method: str, path: str, op: Operation, roles: frozenset[Role] | None) -> dict[int, str]:
    """Every problem status a route can answer, with when: its own, and those of its kind."""
    # A body over --body-limit is refused on every route (jobq/app.py's gate), before the route is looked at.
    problems: dict[int, str] = {400: PROBLEM_MEANINGS[400], 413: PROBLEM_MEANINGS[413]}
    if op.body is not None:
        problems.update(BODY_PROBLEMS)
    if op.query or "{name}" in path:
        problems.setdefault(422, "invalid parameters, each named in errors[]")
    refusals = []
    if roles is not PUBLIC:
        problems[401] = PROBLEM_MEANINGS[401]
        if roles != ANY_ROLE:
            refusals.append(PROBLEM_MEANINGS[403])
    if method.upper() in UNSAFE_METHODS:
        refusals.append(CROSS_SITE_WRITE)
    if refusals:
        problems[403] = "; or ".join(refusals)
    for status, meaning in op.problems.items():
        if status not in PROBLEM_MEANINGS:
            raise ValueError(f"{path}: {status} is not a problem status jobq answers")
        meaning = meaning or PROBLEM_MEANINGS[status]
        problems[status] = f"{problems[status]}; {meaning}" if status in problems else meaning
    return problems


def _headers(headers: Mapping[str, str]) -> dict[str, Any]:
    return {name: {"description": meaning, "schema": {"type": "string"}} for name, meaning in headers.items()}
