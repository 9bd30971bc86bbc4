"""jobq: a job-queue server — HTTP in, asyncio workers out, durable by default."""

from jobq.builtin_handlers import register_builtins
from jobq.handlers import JobContext, Registry, ThreadJobContext, handler, registry
from jobq.retry import Retry

register_builtins(registry)

__all__ = ["JobContext", "Registry", "Retry", "ThreadJobContext", "handler", "registry"]
__version__ = "0.1.0"
