"""The README and docs/*.md run as written: every example runs against a live server here.

Each fenced block of README.md and docs/*.md is one of:

- ``console``: a transcript. Each ``$ `` line (with its ``\\`` continuation lines) is a command,
  run in one bash session per block with the lines under it as its expected output (stdout and
  stderr). ``jobq``, ``python`` and ``python3`` are this venv's; ``grpcurl`` is tests/grpcurl.py,
  which makes the same call through the server's reflection and prints what grpcurl prints.
- ``python``: a block starting ``# NAME.py`` is a file (a handlers module) written beside the
  server that runs the block's examples; any other is a script, run with its output compared to
  the ``# `` comment lines that end it.
- ``sh``, ``text`` or no language (commands to type, listings, log excerpts), ``json``, ``toml``
  and ``yaml`` (files): not run. A file block after ``<!-- file: NAME -->`` is written as that file.

A comment on the line before a block (blank lines between are fine) sets it up:

- ``<!-- server: [NAME] [VAR=VALUE]... [FLAGS]... -->``: run against ``python main.py FLAGS`` with
  those variables (``VAR=…``: a made-up token), sharing the server with every block of the same
  file that names it (or, without a name, has the same marker). Unmarked blocks share one server
  with the default flags; ``server: none`` starts none. With ``--tokens-file F``, each principal's
  token is in ``$NAME_TOKEN`` (``shop`` → ``$SHOP_TOKEN``); ``$JOBQ_URL`` is the server's address
  and ``$JOBQ_PID`` its process id.
- ``<!-- not run: WHY -->``: a console block that shows, but does not run.

Servers run in a temporary directory each (the files of their document beside them), on free
ports: ``localhost:8080``, ``localhost:50051``, ``localhost:7419`` (with ``--faktory-port 7419``)
and any other ``host:port`` in a command or script become the server's HTTP port, its gRPC port,
its Faktory port, or a port nothing listens on, and back again in the output; ``localhost:5432``
is the tests' PostgreSQL (tests/pg.py). Blocks of one server run in document order; servers run
side by side.

Expected output matches with these values normalised: RFC 3339 times and HTTP dates, UUIDs and
24-hex lease ids (the values seen are substituted into later commands, so a transcript may use
the lease id it was given), worker names (``vm:1234``), durations (``0.2s``, ``3ms``, and the
numbers of ``"..._seconds"`` fields), the Python version in ``Server:``, and how many spaces
separate two words (tables align to their widest cell). ``…`` or ``...`` is a wildcard: within a
line for any text, alone on a line for any lines.

To update the docs after a change, ``JOBQ_README_OUTPUTS=out.txt pytest tests/test_readme.py``
writes every command's output to ``out.txt`` (with the ids the docs show), mismatched or not.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.pg import server_url
from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"console", "python"}
NOT_RUN = {"sh", "text", "", "json", "yaml", "toml"}
HTTP_PORT, GRPC_PORT, FAKTORY_PORT, PG_PORT = 8080, 50051, 7419, 5432
COMMAND_TIMEOUT = 60.0
OUTPUTS = os.environ.get("JOBQ_README_OUTPUTS")  # a file: every command's output goes there, to update the docs

FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*([\w ]+):\s*(.*?)\s*-->$")
MARKERS = {"server", "file", "not run"}
MODULE = re.compile(r"^# (\w+\.py)$")
ADDRESS = re.compile(r"\b(localhost|127\.0\.0\.1):(\d{2,5})\b")


# -- the documents ---------------------------------------------------------
@dataclass
class Block:
    """One fenced block of a document."""

    doc: Path
    line: int  # of the opening fence
    lang: str
    text: str
    markers: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def module(self) -> str | None:
        """The file name of a python block that is a module (``# tasks.py``)."""
        match = MODULE.match(self.text.split("\n", 1)[0]) if self.lang == "python" else None
        return match.group(1) if match else None

    @property
    def runs(self) -> bool:
        return self.lang in RUN and "not run" not in self.markers and self.module is None

    @property
    def server(self) -> tuple[str, list[str]]:
        """The name of the server this block runs against (its marker, if unnamed), and its words."""
        spec = self.markers.get("server", "")
        words = shlex.split(spec)
        if words and not words[0].startswith("-") and "=" not in words[0]:
            return words[0], words[1:]
        return spec or "default", words


def parse(doc: Path) -> list[Block]:
    blocks = []
    lines = doc.read_text().split("\n")
    markers: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = MARKER.match(line.strip())
        fence = FENCE.match(line)
        if marker:
            markers[marker.group(1)] = marker.group(2)
        elif fence:
            end = index + 1
            while not lines[end].startswith("```"):
                end += 1
            blocks.append(Block(doc, index + 1, fence.group(1), "\n".join(lines[index + 1 : end]), markers))
            markers = {}
            index = end
        elif line.strip():
            markers = {}
        index += 1
    return blocks


BLOCKS = [block for doc in DOCUMENTS for block in parse(doc)]
RUNNABLE = [block for block in BLOCKS if block.runs]


@dataclass
class Step:
    command: str
    expected: str
    line: int


def transcript(block: Block) -> list[Step]:
    """A console block's commands, each with the output under it."""
    steps: list[Step] = []
    continued = False
    for number, line in enumerate(block.text.split("\n"), start=block.line + 1):
        if continued:
            steps[-1].command += "\n" + line
        elif line.startswith("$ "):
            steps.append(Step(line[2:], "", number))
        elif steps:
            steps[-1].expected += line + "\n"
        else:
            raise AssertionError(f"{block.doc.name}:{number}: a console block starts with a `$ ` command")
        continued = line.endswith("\\")
    return steps


def script_output(source: str) -> str:
    """The ``# `` comment lines that end a python script: what it prints."""
    lines = source.rstrip("\n").split("\n")
    output: list[str] = []
    while lines and lines[-1].startswith("#"):
        output.insert(0, lines.pop()[2:])
    return "\n".join(output)


# -- matching output -------------------------------------------------------
VOLATILE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))"
    r"|(?P<date>(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT)"
    r"|(?P<uuid>\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b)"
    r"|(?P<lease>(?<![0-9a-f])[0-9a-f]{24}(?![0-9a-f]))"
    r"|(?P<worker>\bvm:\d+\b)"
    r"|(?P<seconds>\"\w*(?:_seconds|per_second)\":\s*)-?\d+(?:\.\d+)?(?:[eE]-?\d+)?"
    r"|(?P<duration>\b\d+(?:\.\d+)?(?:ms|s)\b)"
    r"|(?P<python>\bPython/3\.\d+)"
    r"|(?P<wild> ?(?:…|\.\.\.) ?)"
    r"|(?P<space> +)"
)
PATTERNS = {
    "time": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)",
    "date": r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT",
    "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "lease": r"[0-9a-f]{24}",
    "worker": r"[\w.-]+:\d+",
    "number": r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?",
    "duration": r"\d+(?:\.\d+)?(?:ms|s)",
    "python": r"Python/3\.\d+",
    "wild": r"[^\n]*?",
    "space": r" +",
}
ANY_LINES = r"(?:[^\n]*\n)*?"


class Expectation:
    """A block's expected output as a pattern; ``bindings`` maps ids shown in the docs to the ones seen."""

    def __init__(self, expected: str, bindings: dict[str, str]) -> None:
        self.bindings = bindings
        self.groups: dict[str, str] = {}  # group name -> the id it stands for
        pattern = []
        for line in tidy(expected).split("\n") if expected.strip() else []:
            if line.strip() in ("…", "..."):
                pattern.append(ANY_LINES)
            else:
                indent = len(line) - len(line.lstrip(" "))
                pattern.append(" " * indent + self._line(line[indent:]) + r"\n")
        self.pattern = re.compile("".join(pattern))

    def _line(self, line: str) -> str:
        out, at = [], 0
        for match in VOLATILE.finditer(line):
            out.append(re.escape(line[at : match.start()]))
            kind = match.lastgroup or ""
            if kind == "seconds":
                out.append(re.escape(match.group("seconds")) + PATTERNS["number"])
            elif kind in ("uuid", "lease"):
                out.append(self._bound(match.group(), kind))
            else:
                out.append(PATTERNS[kind])
            at = match.end()
        out.append(re.escape(line[at:]))
        return "".join(out)

    def _bound(self, shown: str, kind: str) -> str:
        """An id: what it stood for before, the same as earlier in this output, or any (and remember it)."""
        if shown in self.bindings:
            return re.escape(self.bindings[shown])
        for name, value in self.groups.items():
            if value == shown:
                return f"(?P={name})"
        name = f"id{len(self.groups)}"
        self.groups[name] = shown
        return f"(?P<{name}>{PATTERNS[kind]})"

    def match(self, actual: str) -> bool:
        text = tidy(actual)
        found = self.pattern.fullmatch(text + "\n" if text else "")
        if found is None:
            return False
        for name, shown in self.groups.items():
            self.bindings[shown] = found.group(name)
        return True


def tidy(text: str) -> str:
    """Line ends and trailing spaces do not count, nor blank lines at the end."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip("\n")


# -- running ---------------------------------------------------------------
@dataclass
class Server:
    """One server (or none) that some blocks of a document run against, and where they run."""

    doc: Path
    name: str
    words: list[str]
    workdir: Path
    shims: Path  # where grpcurl's stand-in is
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)
    bindings: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self, files: dict[str, str]) -> None:
        self.workdir.mkdir(parents=True)
        for name, text in files.items():
            (self.workdir / name).write_text(text)
        (self.workdir / "main.py").symlink_to(ROOT / "main.py")
        variables = {}
        flags = []
        for word in self.words:
            name, sep, value = word.partition("=")
            if sep and re.fullmatch(r"[A-Z_]+", name):
                variables[name] = f"t-{secrets.token_urlsafe(18)}" if value in ("…", "...") else value
            else:
                flags.append(word)
        self.env = {**base_env(self.shims), **variables}
        if "--tokens-file" in flags:
            tokens_file = self.workdir / flags[flags.index("--tokens-file") + 1]
            for principal in json.loads(tokens_file.read_text()):
                self.env[re.sub(r"\W", "_", principal["name"]).upper() + "_TOKEN"] = principal["token"]
        database = {PG_PORT: urlsplit(server_url()).port or PG_PORT} if uses_postgres(self.doc) else {}
        for _ in range(3):  # a port picked as free may be taken before the server binds it: pick again
            self.ports = {HTTP_PORT: unused_port(), GRPC_PORT: unused_port(), FAKTORY_PORT: unused_port(), **database}
            if self.name == "none" or self._serve([self.rewrite(flag) for flag in flags]):
                return
            if "already in use" not in self.log():
                break
        raise AssertionError(f"{' '.join(flags)}: the server did not start:\n{self.log()}")

    def _serve(self, flags: list[str]) -> bool:
        port, grpc_port = self.ports[HTTP_PORT], self.ports[GRPC_PORT]
        flags = [  # --faktory-port 7419 serves on this server's Faktory port
            str(self.ports[FAKTORY_PORT]) if index and flags[index - 1] == "--faktory-port" else flag
            for index, flag in enumerate(flags)
        ]
        argv = [sys.executable, "main.py", "--port", str(port), "--grpc-port", str(grpc_port), *flags]
        with (self.workdir / "server.log").open("wb") as log:
            self.process = subprocess.Popen(argv, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.env.update(JOBQ_URL=f"http://127.0.0.1:{port}", JOBQ_PID=str(self.process.pid))
        deadline = time.monotonic() + 60  # every server starts at once, on a machine of 2 cores
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def rewrite(self, text: str) -> str:
        """A command or script as it runs here: the docs' ports are this server's, ids the ones seen."""

        def port(match: re.Match[str]) -> str:
            shown = int(match.group(2))
            if shown not in self.ports:
                self.ports[shown] = unused_port()  # nothing listens there
            return f"{match.group(1)}:{self.ports[shown]}"

        text = ADDRESS.sub(port, text)
        for shown, seen in self.bindings.items():
            text = text.replace(shown, seen)
        return text

    def unwrite(self, output: str) -> str:
        """Output as the docs show it: this server's ports are the docs' again."""
        for shown, real in self.ports.items():
            output = re.sub(rf"(?<=:){real}\b", str(shown), output)
        return output


def uses_postgres(doc: Path) -> bool:
    """Whether a document's examples use PostgreSQL on ``localhost:5432``: the test server stands in for it."""
    return f"localhost:{PG_PORT}" in doc.read_text()


PORTS_GIVEN: set[int] = set()
PORTS_LOCK = threading.Lock()


def unused_port() -> int:
    """A free port no other server here was given (servers start side by side)."""
    with PORTS_LOCK:
        while (port := free_port()) in PORTS_GIVEN:
            pass
        PORTS_GIVEN.add(port)
        return port


def base_env(shims: Path) -> dict[str, str]:
    """The environment of servers and commands: no JOBQ_* of the caller's; this venv's and the shims first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    env["PATH"] = os.pathsep.join([str(shims), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class Shell:
    """One bash session: runs commands one at a time and answers what each printed."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, command: str) -> str:
        assert self.process.stdin is not None
        sentinel = f"__done_{secrets.token_hex(8)}__"
        self.process.stdin.write(f"{{\n{command}\n}} < /dev/null 2>&1; printf '\\n%s\\n' {sentinel}\n")
        self.process.stdin.flush()
        output = []
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no answer after {COMMAND_TIMEOUT}s; so far:\n{''.join(output)}") from None
            if line is None or line.rstrip("\n") == sentinel:
                return "".join(output)
            output.append(line)

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.reader.join(timeout=10)
        self.process.stdout.close()


def mismatch(block: Block, line: int, command: str, expected: str, actual: str) -> str:
    return (
        f"{block.doc.relative_to(ROOT)}:{line}: `{command}` printed what the docs do not show.\n"
        f"--- the docs show:\n{tidy(expected)}\n--- it printed:\n{tidy(actual)}"
    )


def record(where: str, command: str, actual: str, server: Server) -> None:
    """With JOBQ_README_OUTPUTS, add what a command printed, with the ids the docs show, to that file."""
    if OUTPUTS:
        for shown, seen in server.bindings.items():
            actual = actual.replace(seen, shown)
        with open(OUTPUTS, "a") as out:
            out.write(f"=== {where}\n$ {command}\n---\n{tidy(actual)}\n\n")


def run_block(block: Block, server: Server) -> str | None:
    """Run one block; None when every output matched, else what differed (the first difference)."""
    if block.lang == "console":
        shell = Shell(server.workdir, server.env)
        failure = None
        try:
            for step in transcript(block):
                actual = server.unwrite(shell.run(server.rewrite(step.command)))
                record(f"{block.doc.relative_to(ROOT)}:{step.line}", step.command, actual, server)
                if not Expectation(step.expected, server.bindings).match(actual) and failure is None:
                    failure = mismatch(block, step.line, step.command, step.expected, actual)
                    if not OUTPUTS:
                        break
        finally:
            shell.close()
        return failure
    script = server.workdir / f"example_{block.line}.py"
    script.write_text(server.rewrite(block.text))
    done = subprocess.run(
        [sys.executable, script.name],
        cwd=server.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    actual = server.unwrite(done.stdout + done.stderr)
    record(block.where, f"python {script.name}", actual, server)
    expected = script_output(block.text)
    if done.returncode != 0 or not Expectation(expected, server.bindings).match(actual):
        return mismatch(block, block.line, f"python {script.name}", expected, f"{actual}(exit {done.returncode})")
    return None


def run_server(server: Server, blocks: list[Block], files: dict[str, str]) -> dict[str, str | None]:
    outcomes: dict[str, str | None] = {}
    try:
        server.start(files)
        for block in blocks:
            try:
                outcomes[block.where] = run_block(block, server)
            except Exception as error:  # one broken block does not stop the rest
                outcomes[block.where] = f"{block.where}: {type(error).__name__}: {error}"
            if outcomes[block.where] and server.process is not None:
                outcomes[block.where] += f"\n--- the server's log ends:\n{server.log()}"
    except Exception as error:
        for block in blocks:
            outcomes.setdefault(block.where, f"{block.where}: {type(error).__name__}: {error}")
    finally:
        server.stop()
    return outcomes


def documents_files(doc: Path) -> dict[str, str]:
    """The files a document's blocks write: its modules (``# tasks.py``) and ``<!-- file: NAME -->`` blocks."""
    files = {}
    for block in BLOCKS:
        if block.doc == doc and block.module:
            files[block.module] = block.text + "\n"
        elif block.doc == doc and "file" in block.markers:
            files[block.markers["file"]] = block.text + "\n"
    return files


def servers(workdir: Path) -> Iterator[tuple[Server, list[Block]]]:
    groups: dict[tuple[Path, str], list[Block]] = {}
    for block in RUNNABLE:
        groups.setdefault((block.doc, block.server[0]), []).append(block)
    for number, ((doc, key), blocks) in enumerate(groups.items()):
        specs = {tuple(b.server[1]) for b in blocks if b.server[1]}
        assert len(specs) <= 1, f"{doc.name}: server {key!r} is started with different flags: {specs}"
        words = list(next(iter(specs), ()))
        slug = re.sub(r"\W", "_", key)[:30]
        yield Server(doc, key, words, workdir / f"{number}-{slug}", workdir / "bin"), blocks


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Run every runnable block, each server's blocks in order and the servers side by side."""
    missing = [tool for tool in ("bash", "curl") if shutil.which(tool) is None]
    assert not missing, f"the docs' examples need {' and '.join(missing)}"
    workdir = tmp_path_factory.mktemp("readme")
    (workdir / "bin").mkdir()
    shim = workdir / "bin" / "grpcurl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "grpcurl.py"}" "$@"\n')
    shim.chmod(0o755)
    found: dict[str, str | None] = {}
    plan = list(servers(workdir))
    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        runs = [pool.submit(run_server, server, blocks, documents_files(server.doc)) for server, blocks in plan]
        for run in runs:
            found.update(run.result())
    return found


# -- the tests -------------------------------------------------------------
@pytest.mark.parametrize("block", RUNNABLE, ids=[block.where for block in RUNNABLE])
def test_example_runs_as_written(block: Block, outcomes: dict[str, str | None]) -> None:
    failure = outcomes[block.where]
    if failure:
        pytest.fail(failure, pytrace=False)


def test_every_block_runs_or_says_why_not() -> None:
    """A block in a language the test does not know, or a console block without commands, is a mistake."""
    for block in BLOCKS:
        assert block.lang in RUN | NOT_RUN, f"{block.where}: run ```{block.lang} blocks, or skip them here"
        assert set(block.markers) <= MARKERS, f"{block.where}: unknown marker {set(block.markers) - MARKERS}"
        if "server" in block.markers:
            assert block.runs, f"{block.where}: a server marker on a block that does not run"
        if block.lang == "console" and block.runs:
            assert transcript(block), f"{block.where}: a console block without `$ ` commands (use ```sh)"
        if block.lang == "python":
            compile(block.text, block.where, "exec")
        if "file" in block.markers:
            assert block.lang in NOT_RUN - {"sh", ""}, f"{block.where}: a file marker on a {block.lang} block"
    assert len(RUNNABLE) >= 25  # the parser still finds the examples


def test_output_is_compared_with_only_volatile_values_normalised() -> None:
    bindings: dict[str, str] = {}
    shown = '{"id":"thumb-1","status":"completed","lease_id":"6064f26936de743bf4c8b5f6","at":"2026-12-01T19:07:20Z"}'
    seen = shown.replace("6064f26936de743bf4c8b5f6", "0123456789abcdef01234567").replace("19:07:20", "08:00:01.5")
    assert Expectation(shown, bindings).match(seen)
    assert bindings == {"6064f26936de743bf4c8b5f6": "0123456789abcdef01234567"}
    assert not Expectation(shown, {}).match(seen.replace("completed", "failed"))
    assert not Expectation(shown, bindings).match(seen.replace("01234567", "76543210"))  # a lease id seen before
    assert Expectation("a\n…\nd", {}).match("a\nb\nc\nd")
    assert Expectation('{"n":1, … }', {}).match('{"n":1, "m":2 }')
    assert not Expectation("a\nd", {}).match("a\nb\nd")
    assert Expectation("QUEUE    PAUSED  OLDEST WAIT\nreports  yes           0.2s", {}).match(
        "QUEUE    PAUSED  OLDEST WAIT\nreports  yes          12.5s"
    )
