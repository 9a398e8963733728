"""A small local server that speaks enough of the Hugging Face Hub's HTTP API for tests.

It covers what ``huggingface_hub`` 2.4 sends for ``create_repo``, ``upload_folder`` / ``create_commit``
(files inline as base64, no LFS), ``create_tag``, ``model_info`` / ``repo_info``, ``list_repo_tree``,
``hf_hub_download`` and ``snapshot_download``. Repositories live in memory, as git-like history: every
commit is a full snapshot ``{path: bytes}`` with a 40-hex id, branches and tags point at commits, and
blob ids are git blob SHA-1s (what the Hub reports as a regular file's ``oid`` and ``ETag``).

Routes (``{t}`` is ``model``, ``dataset`` or ``space``; revisions arrive URL-quoted)::

    POST /api/repos/create                       -> {"url": ...}; 409 {"error", "url"} if it exists
    POST /api/validate-yaml                      -> {"errors": [], "warnings": []} or 400 with errors
    GET  /api/{t}s/{ns}/{name}[/revision/{rev}]  -> repo info with "sha" and "siblings"
    POST /api/{t}s/{ns}/{name}/preupload/{rev}   -> every file "regular", with the oid already there
    POST /api/{t}s/{ns}/{name}/commit/{rev}      <- ndjson: header, file (base64), deletedFile, deletedFolder
    POST /api/{t}s/{ns}/{name}/tag/{rev}         <- {"tag": ..., "message": ...}
    GET  /api/{t}s/{ns}/{name}/tree/{rev}[/{path}]?recursive=true
    HEAD/GET /[{t}s/]{ns}/{name}/resolve/{rev}/{path}  with X-Repo-Commit, ETag, Content-Length

Errors carry the ``X-Error-Code`` header huggingface_hub maps to its exceptions (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``). With ``token`` set, writes (and reads of private repos) need
``Authorization: Bearer <token>``.

Use it as a context manager, or through the ``hub_server`` pytest fixture below, which also points
huggingface_hub at the server (endpoint, token, offline mode off, Xet off) for the test only. A test
module makes the fixture available by importing it::

    from tests.hub_server import HubServer, hub_server_fixture  # noqa: F401  (registers the "hub_server" fixture)
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"

# What the Hub puts in a new repository's first commit (shortened): large binary files go to LFS.
INITIAL_GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""


def git_blob_oid(data: bytes) -> str:
    """The id git gives a file's content: SHA-1 of ``blob <size>\\0<bytes>``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, bytes]
    """The whole tree at this commit, path -> content."""
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """Branch, then tag, then full commit id (as the Hub does)."""
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and revision in self.commits:
            oid = revision
        return self.commits.get(oid) if oid else None


class HubError(Exception):
    """An error answer: status, message, and the X-Error-Code huggingface_hub understands."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class HubServer:
    """An in-memory Hub on 127.0.0.1 (a free port), serving each request on its own thread."""

    def __init__(self, token: str | None = "hf_test_token", namespace: str = "test-user"):
        self.token = token
        """Writes need ``Authorization: Bearer <token>``; ``None`` accepts anonymous writes."""
        self.namespace = namespace
        """Namespace of repos created without an organization (the 'logged-in user')."""
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request served, for tests that check what the client did."""
        self.lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> HubServer:
        handler = type("BoundHubHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the hub server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- helpers for tests -----------------------------------------------------------------------

    def files(self, repo_id: str, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> dict[str, bytes]:
        """The files of a repository at a revision (a copy)."""
        with self.lock:
            commit = self._repo(repo_type, repo_id).resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_id} has no revision {revision!r}")
            return dict(commit.files)

    def history(self, repo_id: str, branch: str = DEFAULT_BRANCH, repo_type: str = "model") -> list[Commit]:
        """Commits of a branch, newest first."""
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            out, oid = [], repo.branches.get(branch)
            while oid:
                out.append(repo.commits[oid])
                oid = repo.commits[oid].parent
            return out

    def tags(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        with self.lock:
            return dict(self._repo(repo_type, repo_id).tags)

    # -- repository state ------------------------------------------------------------------------

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _new_commit(self, repo: Repo, parent: str | None, title: str, files: dict[str, bytes]) -> Commit:
        seed = json.dumps([repo.repo_id, parent, title, next(self._counter), time.time_ns()]).encode()
        tree = b"".join(p.encode() + b"\0" + git_blob_oid(d).encode() for p, d in sorted(files.items()))
        oid = hashlib.sha1(seed + tree).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        commit = Commit(oid=oid, parent=parent, title=title, files=files, date=date)
        repo.commits[oid] = commit
        return commit

    def url_of(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo.repo_id}"


# --------------------------------------------------------------------------------------------------
# The request handler
# --------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer  # set on the subclass HubServer.start() makes
    _raw_body: bytes = b""
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a Content-Length

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        pass

    # -- plumbing --------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _body(self) -> bytes:
        return self._raw_body

    def _json_body(self) -> Any:
        raw = self._body()
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"body is not JSON: {err}") from None

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _send_error(self, err: HubError, head: bool = False) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        headers.update({k: v for k, v in err.extra.items() if k.startswith("X-")})
        body = {"error": err.message, **{k: v for k, v in err.extra.items() if not k.startswith("X-")}}
        self._send(err.status, json.dumps(body).encode(), headers, head=head)

    def _authorized(self) -> bool:
        expected = self.hub.token
        return expected is None or self.headers.get("Authorization") == f"Bearer {expected}"

    def _require_write(self) -> None:
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _readable_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.hub._repo(repo_type, repo_id)
        if repo.private and not self._authorized():
            # The Hub answers like this for private repos, so as not to reveal that they exist.
            raise HubError(401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        with self.hub.lock:
            self.hub.requests.append((method, url.path))
        # Read the whole body first, whatever the answer: on a kept-alive connection, an unread body
        # would be taken for the next request.
        self._raw_body = self._read_body()
        try:
            self._route(method, parts, query)
        except HubError as err:
            self._send_error(err, head=method == "HEAD")
        except Exception as err:  # a bug in this server: answer 500 rather than drop the connection
            self._send_error(HubError(500, f"{type(err).__name__}: {err}"), head=method == "HEAD")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    # -- routing ---------------------------------------------------------------------------------

    def _route(self, method: str, parts: list[str], query: dict[str, str]) -> None:
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo()
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate_yaml()
        if len(parts) >= 4 and parts[0] == "api" and parts[1].endswith("s") and parts[1][:-1] in REPO_TYPES:
            repo_type, repo_id = parts[1][:-1], f"{unquote(parts[2])}/{unquote(parts[3])}"
            action, rest = (parts[4], parts[5:]) if len(parts) > 4 else ("info", [])
            if method == "GET" and action == "info":
                return self._repo_info(repo_type, repo_id, DEFAULT_BRANCH)
            if not rest:
                raise HubError(404, f"no route for {method} {self.path}")
            revision = unquote(rest[0])
            if method == "GET" and action == "revision":
                return self._repo_info(repo_type, repo_id, revision)
            if method == "GET" and action == "tree":
                return self._tree(repo_type, repo_id, revision, unquote("/".join(rest[1:])), query)
            if method == "POST" and action == "preupload":
                return self._preupload(repo_type, repo_id, revision)
            if method == "POST" and action == "commit":
                return self._commit(repo_type, repo_id, revision, query)
            if method == "POST" and action == "tag":
                return self._tag(repo_type, repo_id, revision)
        if method in ("GET", "HEAD"):
            repo_type = "model"
            if parts and parts[0] in ("datasets", "spaces"):
                repo_type, parts = parts[0][:-1], parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id = f"{unquote(parts[0])}/{unquote(parts[1])}"
                path = unquote("/".join(parts[4:]))
                return self._resolve(repo_type, repo_id, unquote(parts[3]), path, head=method == "HEAD")
        raise HubError(404, f"no route for {method} {self.path}")

    # -- endpoints -------------------------------------------------------------------------------

    def _create_repo(self) -> None:
        self._require_write()
        body = self._json_body()
        name, organization = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if not name or repo_type not in REPO_TYPES:
            raise HubError(400, "a repo needs a name and a type among model, dataset, space")
        repo_id = f"{organization or self.hub.namespace}/{name}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        with self.hub.lock:
            existing = self.hub.repos.get((repo_type, repo_id))
            if existing is not None:
                # huggingface_hub reads "url" even from this answer when exist_ok=True.
                raise HubError(409, f"You already created this {repo_type} repo",
                               extra={"url": self.hub.url_of(existing)})
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private)
            first = self.hub._new_commit(repo, None, "initial commit", {".gitattributes": INITIAL_GITATTRIBUTES})
            repo.branches[DEFAULT_BRANCH] = first.oid
            self.hub.repos[(repo_type, repo_id)] = repo
            self._send_json(200, {"url": self.hub.url_of(repo), "name": repo_id, "id": first.oid[:24]})

    def _validate_yaml(self) -> None:
        body = self._json_body()
        errors = _card_metadata_errors(str(body.get("content", "")))
        if errors:
            self._send_json(400, {"errors": [{"message": m} for m in errors], "warnings": []})
        else:
            self._send_json(200, {"errors": [], "warnings": []})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub.lock:
            repo = self._readable_repo(repo_type, repo_id)
            commit = repo.resolve(revision)
            if commit is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            info = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "lastModified": commit.date,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            }
            if repo_type == "model":
                info["modelId"] = repo_id
            self._send_json(200, info)

    def _writable_branch(self, repo: Repo, revision: str) -> Commit:
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision} (only branches can take commits here)",
                           "RevisionNotFound")
        return repo.commits[repo.branches[revision]]

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        self._require_write()
        body = self._json_body()
        with self.hub.lock:
            head = self._writable_branch(self.hub._repo(repo_type, repo_id), revision)
            files = []
            for item in body.get("files", []):
                path = item["path"]
                current = head.files.get(path)
                files.append({
                    "path": path,
                    "uploadMode": "regular",  # this server keeps every file inline: no LFS, no Xet
                    "shouldIgnore": False,
                    "oid": git_blob_oid(current) if current is not None else None,
                })
            self._send_json(200, {"files": files, "commitOid": head.oid})

    def _commit(self, repo_type: str, repo_id: str, revision: str, query: dict[str, str]) -> None:
        self._require_write()
        if query.get("create_pr") in ("1", "true"):
            raise HubError(400, "this test hub does not do pull requests")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit starts with a header line")
        header = lines[0]["value"]
        with self.hub.lock:
            repo = self.hub._repo(repo_type, repo_id)
            head = self._writable_branch(repo, revision)
            parent = header.get("parentCommit")
            if parent and parent != head.oid:
                raise HubError(412, f"parent commit {parent} is not the head of {revision} ({head.oid})")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = _check_path(value.get("path", ""))
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[path] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                elif key in ("lfsFile", "copyFile"):
                    raise HubError(400, f"this test hub stores regular files only, got {key!r} for {path}")
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit = self.hub._new_commit(repo, head.oid, header.get("summary", ""), files)
            repo.branches[revision] = commit.oid
            self._send_json(200, {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub.url_of(repo)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            })

    def _tag(self, repo_type: str, repo_id: str, revision: str) -> None:
        self._require_write()
        body = self._json_body()
        tag = body.get("tag", "")
        if not tag or "/" in tag or tag.startswith("."):
            raise HubError(400, f"invalid tag name {tag!r}")
        with self.hub.lock:
            repo = self.hub._repo(repo_type, repo_id)
            commit = repo.resolve(revision)
            if commit is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if tag in repo.tags or tag in repo.branches:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = commit.oid
            self._send_json(200, {})

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, query: dict[str, str]) -> None:
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        with self.hub.lock:
            repo = self._readable_repo(repo_type, repo_id)
            commit = repo.resolve(revision)
            if commit is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            prefix = path.strip("/") + "/" if path.strip("/") else ""
            under = {p: d for p, d in commit.files.items() if p.startswith(prefix)}
            if prefix and not under:
                raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
            entries: dict[str, dict[str, Any]] = {}
            for full, data in sorted(under.items()):
                rel_parts = full[len(prefix):].split("/")
                # the folders on the way to the file (only the first when not recursive)
                for depth in range(1, len(rel_parts) if recursive else min(len(rel_parts), 2)):
                    folder = prefix + "/".join(rel_parts[:depth])
                    entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                                "oid": _folder_oid(commit.files, folder)})
                if recursive or len(rel_parts) == 1:
                    entries[full] = {"type": "file", "path": full, "size": len(data), "oid": git_blob_oid(data)}
            self._send_json(200, [entries[k] for k in sorted(entries)])

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, head: bool) -> None:
        with self.hub.lock:
            repo = self._readable_repo(repo_type, repo_id)
            commit = repo.resolve(revision)
            if commit is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            data = commit.files.get(path)
            if data is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound",
                               extra={"X-Repo-Commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_oid(data)}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        status, body = 200, data
        byte_range = self.headers.get("Range", "")
        if byte_range.startswith("bytes=") and not head:
            # "bytes=N-" or "bytes=N-M": what huggingface_hub sends to resume an interrupted download
            start_s, _, end_s = byte_range[len("bytes="):].partition("-")
            start = int(start_s or 0)
            end = min(int(end_s), len(data) - 1) if end_s else len(data) - 1
            status, body = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, body, headers, content_type="application/octet-stream", head=head)


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise HubError(400, f"invalid path in repo: {path!r}")
    return path


def _folder_oid(files: dict[str, bytes], folder: str) -> str:
    prefix = folder + "/"
    listing = "".join(f"{p}:{git_blob_oid(d)}\n" for p, d in sorted(files.items()) if p.startswith(prefix))
    return hashlib.sha1(listing.encode()).hexdigest()


def _card_metadata_errors(content: str) -> list[str]:
    """The checks the Hub makes on a README's YAML block that matter for a model card we write."""
    if not content.startswith("---"):
        return []  # no metadata: the Hub accepts it (with a warning)
    end = content.find("\n---", 3)
    if end < 0:
        return ["the YAML block is not closed by '---'"]
    try:
        meta = yaml.safe_load(content[3:end])
    except yaml.YAMLError as err:
        return [f"YAML does not parse: {err}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["metadata must be a mapping"]
    errors = []
    for key in ("language", "tags", "datasets", "base_model"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, str)
                                      or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            errors.append(f'"{key}" must be a string or a list of strings')
    for key in ("license", "library_name", "pipeline_tag"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    index = meta.get("model-index")
    if index is not None:
        if not isinstance(index, list):
            return errors + ['"model-index" must be a list']
        for i, entry in enumerate(index):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                errors.append(f'"model-index[{i}].name" is required')
                continue
            for j, result in enumerate(entry.get("results") or []):
                where = f"model-index[{i}].results[{j}]"
                if not isinstance(result.get("task", {}).get("type"), str):
                    errors.append(f'"{where}.task.type" is required')
                dataset = result.get("dataset", {})
                if not isinstance(dataset.get("name"), str) or not isinstance(dataset.get("type"), str):
                    errors.append(f'"{where}.dataset" needs a name and a type')
                for k, metric in enumerate(result.get("metrics") or []):
                    if not isinstance(metric.get("type"), str) or "value" not in metric:
                        errors.append(f'"{where}.metrics[{k}]" needs a type and a value')
    return errors


# --------------------------------------------------------------------------------------------------
# pytest fixture
# --------------------------------------------------------------------------------------------------


@pytest.fixture(name="hub_server")
def hub_server_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running :class:`HubServer`, with huggingface_hub pointed at it for this test only.

    huggingface_hub reads its settings into ``huggingface_hub.constants`` at import time, so the
    environment variables alone would not reach an already imported library: both are set (the
    endpoint also lives in the download URL template). Offline mode, which refuses every request, even
    to 127.0.0.1, is turned off; the token is the server's, never a real one from the machine; Xet is
    disabled so uploads stay inline. As a safety net, the shared HTTP client refuses any request to
    another host than this server while the test runs.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http, set_client_factory

    with HubServer() as server:
        endpoint = server.endpoint
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_TOKEN", server.token or "")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

        previous_factory = _http._GLOBAL_CLIENT_FACTORY
        server_host = urlsplit(endpoint).netloc

        def only_this_server(request: Any) -> None:
            netloc = request.url.netloc
            if (netloc.decode() if isinstance(netloc, bytes) else netloc) != server_host:
                raise RuntimeError(f"a test tried to reach {request.url}; only the local hub at {endpoint} is allowed")

        def guarded_client() -> Any:
            client = previous_factory()
            hooks = client.event_hooks
            client.event_hooks = {**hooks, "request": [*hooks.get("request", []), only_this_server]}
            return client

        set_client_factory(guarded_client)
        try:
            yield server
        finally:
            set_client_factory(previous_factory)
