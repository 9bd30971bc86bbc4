"""The jobq SDK: what a producer or a worker host needs, without the server.

* :mod:`jobq.sdk.client`: ``JobqClient``, ``SyncJobqClient``, ``BatchedSource``;
* :mod:`jobq.sdk.workflow`: the workflow builder ``client.workflow()`` answers (``add``,
  ``chain``, ``group``, ``submit``): jobs that wait for other jobs, created together;
* :mod:`jobq.sdk.remote_worker`: ``jobq worker`` (or ``python -m jobq.sdk.remote_worker``),
  the worker pool leasing over HTTP.

Nothing under ``jobq.sdk`` imports the server: no ``aiohttp.web``, no request models
(pydantic), no gRPC, no storage. It needs aiohttp's client, the job record
(``jobq.job``), the errors (``jobq.errors``) and, to run handlers, the worker pool
(``jobq.workers``) and the handler registry.
"""
