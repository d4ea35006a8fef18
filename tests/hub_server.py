"""A local stand-in for the Hugging Face Hub, for offline upload/download tests.

It speaks the HTTP endpoints that ``huggingface_hub`` 2.x and ``datasets`` 5.x really call when pushing and loading
model and dataset repos (read from their sources), with the Hub's answers, headers and error codes:

===========================================================  =========================================================
``GET  /api/whoami-v2``                                       user of the ``Authorization: Bearer`` token
``POST /api/repos/create``                                    create a repo (409 if it exists)
``POST /api/validate-yaml``                                   README front-matter check (YAML mapping, typed fields)
``GET  /api/{models,datasets}/{ns}/{name}[/revision/{rev}]``  repo info with ``sha`` and ``siblings``
``GET  /api/{type}s/{id}/tree/{rev}[/{path}]``                tree listing (``recursive``; 404 ``EntryNotFound``)
``POST /api/{type}s/{id}/paths-info/{rev}``                   info on given paths (form-encoded ``paths``)
``GET  /api/{type}s/{id}/refs``                               branches and pull-request refs
``POST /api/{type}s/{id}/branch/{branch}``                    create a branch
``POST /api/{type}s/{id}/preupload/{rev}``                    upload mode per file ("lfs" for binary, else "regular")
``POST /{datasets/}{id}.git/info/lfs/objects/batch``          git-LFS batch API, basic transfer
``PUT  /lfs-upload/{sha256}``                                 LFS object upload (checked against its sha256)
``POST /api/{type}s/{id}/commit/{rev}[?create_pr=1]``         NDJSON commit: file, lfsFile, deletedFile, deletedFolder
``HEAD|GET /{datasets/}{id}/resolve/{rev}/{path}``            download with ``ETag``, ``X-Repo-Commit``, ``Range``
===========================================================  =========================================================

Clients must run with ``HF_HUB_DISABLE_XET=1`` (set before ``huggingface_hub`` is imported), so that LFS files go
through the git-LFS basic transfer instead of the Xet storage service, which this server does not emulate.

The server binds 127.0.0.1 on a free port, records every request (method, path, headers, body) for assertions, and
shuts itself down after ``lifetime`` seconds. Use it as a context manager::

    with LocalHub(lifetime=120) as hub:
        env = {**os.environ, **hub.client_env(tmp_path)}   # HF_ENDPOINT, HF_HOME, HF_HUB_DISABLE_XET, ...
        subprocess.run([...], env=env)

or from a shell: ``python tests/hub_server.py --lifetime 600`` (prints the endpoint).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER = "tester"
LFS_EXTENSIONS = (".safetensors", ".bin", ".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".pt", ".pth", ".onnx", ".zip")
REGULAR_MAX_BYTES = 10 * 1024 * 1024
PIPELINE_TAGS = {"object-detection", "image-segmentation", "image-classification", "feature-extraction"}


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid`` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def oid(self) -> str:
        """Git oid: of the content for a regular file, of the pointer file for an LFS file."""
        return git_blob_oid(lfs_pointer(self.sha256, len(self.data)) if self.lfs else self.data)


@dataclass
class Commit:
    oid: str
    files: dict[str, Blob]
    title: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # branch or "refs/pr/N" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    num_prs: int = 0

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


class HubError(Exception):
    """An error answer: status, ``X-Error-Code`` / ``X-Error-Message`` headers, JSON ``{"error": ..., **extra}``."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


@dataclass
class Request:
    """One recorded request (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HubState:
    """All repos, LFS objects and recorded requests; every access holds ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self._counter = 0

    def new_commit(self, repo: Repo, parent: Commit | None, files: dict[str, Blob], title: str) -> Commit:
        self._counter += 1
        digest = hashlib.sha1(f"{repo.repo_id}|{parent.oid if parent else ''}|{title}|{self._counter}".encode())
        date = _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
        commit = Commit(oid=digest.hexdigest(), files=files, title=title, date=date)
        repo.commits[commit.oid] = commit
        return commit


_REPO = r"(?P<type>models|datasets|spaces)/(?P<id>[^/]+/[^/]+)"
_GIT_REPO = r"(?P<prefix>datasets/|spaces/)?(?P<id>[^/]+/[^/]+)"  # models have no prefix in git / resolve URLs
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(rf"^/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"^/api/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("GET", re.compile(rf"^/api/{_REPO}/refs$"), "refs"),
    ("POST", re.compile(rf"^/api/{_REPO}/branch/(?P<branch>[^/]+)$"), "create_branch"),
    ("POST", re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("POST", re.compile(rf"^/{_GIT_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$"), "lfs_upload"),
    ("HEAD", re.compile(rf"^/{_GIT_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/{_GIT_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    # -- plumbing -------------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        state = self.server.state
        with state.lock:
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append(Request(self.command, self.path, headers, body))
        for method, pattern, name in ROUTES:
            match = pattern.match(url.path) if method == self.command else None
            if match:
                params = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                try:
                    with state.lock:
                        status, payload, headers = getattr(self, f"h_{name}")(params, query, body)
                except HubError as err:
                    status, headers = err.status, {"X-Error-Message": err.message}
                    if err.code:
                        headers["X-Error-Code"] = err.code
                    payload = {"error": err.message, **err.extra}
                self._send(status, payload, headers)
                return
        self._send(404, {"error": f"no route for {self.command} {url.path}"}, {})

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        if isinstance(payload, bytes):
            data, content_type = payload, "application/octet-stream"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", headers.pop("Content-Length", str(len(data))))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # -- helpers --------------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and len(auth) > len("Bearer "):
            return USER
        if required:
            raise HubError(401, "Invalid credentials in Authorization header")
        return None

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        user = self._user(required=write)
        repo = self.server.state.repos.get((repo_type.rstrip("s"), repo_id))
        if repo is None or (repo.private and user is None):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str | None) -> Commit:
        commit = repo.resolve(revision or "main")
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _file_entry(self, path: str, blob: Blob, commit: Commit, expand: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
        if blob.lfs:
            pointer = lfs_pointer(blob.sha256, len(blob.data))
            entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(pointer)}
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    @staticmethod
    def _folder_entry(path: str) -> dict[str, Any]:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    @staticmethod
    def _folders(files: dict[str, Blob]) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}

    # -- endpoints ------------------------------------------------------------------------------------------------
    def h_whoami(self, params, query, body):
        self._user(required=True)
        return 200, {"type": "user", "name": USER, "fullname": "Test User", "orgs": [],
                     "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}, {}

    def h_create_repo(self, params, query, body):
        self._user(required=True)
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{self.endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        state = self.server.state
        if (repo_type, repo_id) in state.repos:
            raise HubError(409, f"You already created this {repo_type} repo", url=url)
        repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        rules = b"".join(b"*%s filter=lfs diff=lfs merge=lfs -text\n" % ext.encode() for ext in LFS_EXTENSIONS)
        gitattributes = Blob(rules, lfs=False)
        repo.refs["main"] = state.new_commit(repo, None, {".gitattributes": gitattributes}, "initial commit").oid
        state.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def h_validate_yaml(self, params, query, body):
        payload = json.loads(body or b"{}")
        errors = validate_card_metadata(payload.get("content", ""), payload.get("repoType") or "model")
        return (400 if errors else 200), {"errors": [{"message": e} for e in errors], "warnings": []}, {}

    def h_repo_info(self, params, query, body):
        repo = self._repo(params["type"], params["id"])
        commit = self._commit(repo, params.get("rev"))
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path, "size": len(blob.data), "blobId": blob.oid}
            if blob.lfs:
                sibling["lfs"] = {"size": len(blob.data), "sha256": blob.sha256,
                                  "pointerSize": len(lfs_pointer(blob.sha256, len(blob.data)))}
            siblings.append(sibling)
        info: dict[str, Any] = {"id": repo.repo_id, "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                                "author": repo.repo_id.split("/")[0], "sha": commit.oid, "private": repo.private,
                                "disabled": False, "gated": False, "lastModified": commit.date, "tags": [],
                                "siblings": siblings, "downloads": 0, "likes": 0}
        readme = commit.files.get("README.md")
        if readme is not None:
            info["cardData"] = parse_front_matter(readme.data.decode("utf-8", "replace")) or {}
        return 200, info, {}

    def h_tree(self, params, query, body):
        repo = self._repo(params["type"], params["id"])
        commit = self._commit(repo, params["rev"])
        base = (params.get("path") or "").strip("/")
        recursive = query.get("recursive", "false").lower() == "true"
        expand = query.get("expand", "false").lower() == "true"
        prefix = base + "/" if base else ""
        folders = self._folders(commit.files)
        if base and base not in folders:
            raise HubError(404, f"{base} does not exist on {params['rev']}", "EntryNotFound")
        entries = []
        for folder in sorted(folders):
            if folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix):]):
                entries.append(self._folder_entry(folder))
        for path, blob in sorted(commit.files.items()):
            if path.startswith(prefix) and (recursive or "/" not in path[len(prefix):]):
                entries.append(self._file_entry(path, blob, commit, expand))
        return 200, entries, {}

    def h_paths_info(self, params, query, body):
        repo = self._repo(params["type"], params["id"])
        commit = self._commit(repo, params["rev"])
        form = parse_qs(body.decode())
        expand = form.get("expand", ["False"])[-1].lower() == "true"
        folders = self._folders(commit.files)
        entries = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                entries.append(self._file_entry(path, commit.files[path], commit, expand))
            elif path in folders:
                entries.append(self._folder_entry(path))
        return 200, entries, {}

    def h_refs(self, params, query, body):
        repo = self._repo(params["type"], params["id"])
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in repo.refs.items()
                    if not n.startswith("refs/")]
        prs = [{"name": n, "ref": n, "targetCommit": c} for n, c in repo.refs.items() if n.startswith("refs/pr/")]
        return 200, {"branches": branches, "converts": [], "tags": [], "pullRequests": prs}, {}

    def h_create_branch(self, params, query, body):
        repo = self._repo(params["type"], params["id"], write=True)
        if params["branch"] in repo.refs:
            raise HubError(409, f"Reference already exists: refs/heads/{params['branch']}")
        start = json.loads(body or b"{}").get("startingPoint")
        repo.refs[params["branch"]] = self._commit(repo, start).oid
        return 200, {}, {}

    def h_preupload(self, params, query, body):
        repo = self._repo(params["type"], params["id"], write=True)
        commit = repo.resolve(params["rev"])
        files = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["path"].lower().endswith(LFS_EXTENSIONS) or b"\0" in sample or item["size"] > REGULAR_MAX_BYTES
            remote = commit.files.get(item["path"]) if commit else None
            oid = None
            if remote is not None and remote.lfs == lfs:  # oid the client compares: sha256 (LFS) or git sha1
                oid = remote.sha256 if lfs else remote.oid
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return 200, {"files": files, "commitOid": commit.oid if commit else None}, {}

    def h_lfs_batch(self, params, query, body):
        repo_type = (params.get("prefix") or "models/").rstrip("/")
        self._repo(repo_type, params["id"], write=True)
        payload = json.loads(body)
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "only the basic upload transfer is supported")
        objects = []
        for obj in payload["objects"]:
            item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.server.state.lfs:
                item["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{obj['oid']}", "expires_in": 3600}}
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, {}

    def h_lfs_upload(self, params, query, body):
        if hashlib.sha256(body).hexdigest() != params["oid"]:
            raise HubError(400, "uploaded content does not match its sha256")
        self.server.state.lfs[params["oid"]] = body
        return 200, {}, {}

    def h_commit(self, params, query, body):
        repo = self._repo(params["type"], params["id"], write=True)
        revision = params["rev"]
        parent = self._commit(repo, revision)
        if not revision.startswith("refs/pr/") and revision not in repo.refs:
            raise HubError(400, f"Cannot commit to a commit id, only to a branch: {revision}")
        files = dict(parent.files)
        title = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "header":
                title = value["summary"]
                if value.get("parentCommit") and value["parentCommit"] != parent.oid:
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = self.server.state.lfs.get(value["oid"])
                if data is None:
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = Blob(data, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        if not title:
            raise HubError(400, "commit summary is required")
        commit = self.server.state.new_commit(repo, parent, files, title)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        pr_url = None
        if query.get("create_pr") == "1":
            repo.num_prs += 1
            repo.refs[f"refs/pr/{repo.num_prs}"] = commit.oid
            pr_url = f"{self.endpoint}/{prefix}{repo.repo_id}/discussions/{repo.num_prs}"
        else:
            repo.refs[revision] = commit.oid
        return 200, {"success": True, "commitOid": commit.oid, "pullRequestUrl": pr_url,
                     "commitUrl": f"{self.endpoint}/{prefix}{repo.repo_id}/commit/{commit.oid}"}, {}

    def h_resolve(self, params, query, body):
        repo_type = (params.get("prefix") or "models/").rstrip("/")
        repo = self._repo(repo_type, params["id"])
        commit = self._commit(repo, params["rev"])
        blob = commit.files.get(params["path"])
        if blob is None:
            raise HubError(404, f"Entry not found: {params['path']}", "EntryNotFound")
        headers = {"ETag": f'"{blob.sha256 if blob.lfs else blob.oid}"', "X-Repo-Commit": commit.oid,
                   "Accept-Ranges": "bytes"}
        data = blob.data
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and data:
            start = int(match[1]) if match[1] else max(len(data) - int(match[2]), 0)
            end = min(int(match[2]), len(data) - 1) if match[1] and match[2] else len(data) - 1
            if start >= len(data):
                raise HubError(416, "Requested range not satisfiable")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, data[start : end + 1], headers
        return 200, data, headers


def parse_front_matter(text: str) -> dict[str, Any] | None:
    """The YAML block between the leading ``---`` lines of a card, or None when there is none."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    return yaml.safe_load(match[1]) or {}


def validate_card_metadata(content: str, repo_type: str) -> list[str]:
    """A subset of the Hub's README metadata checks: YAML mapping, typed well-known fields, dataset configs."""
    try:
        meta = parse_front_matter(content)
    except yaml.YAMLError as err:
        return [f"YAML parse error: {err}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["metadata must be a YAML mapping"]
    errors = []
    for key in ("license", "library_name", "pipeline_tag", "pretty_name"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    for key in ("tags", "datasets", "language", "task_categories", "size_categories"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            errors.append(f'"{key}" must be a list of strings')
    if repo_type == "model" and "pipeline_tag" in meta and meta["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be a known task, got {meta["pipeline_tag"]!r}')
    for config in meta.get("configs") or []:
        if not isinstance(config, dict) or "config_name" not in config:
            errors.append('"configs" entries need a "config_name"')
    return errors


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState
    endpoint: str


class LocalHub:
    """Run the Hub stand-in on 127.0.0.1 in a background thread; it stops itself after ``lifetime`` seconds."""

    def __init__(self, lifetime: float = 120.0, port: int = 0) -> None:
        self.state = HubState()
        self._server = _Server(("127.0.0.1", port), HubHandler)
        self._server.state = self.state
        self.endpoint = self._server.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.lifetime = lifetime
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    def start(self) -> "LocalHub":
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def client_env(self, home: Path, token: str | None = "hf_local_hub_test_token") -> dict[str, str]:
        """Environment for a client process: endpoint, Xet off, caches under ``home``, a token, no telemetry."""
        env = {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home),
               "HF_HUB_CACHE": str(Path(home) / "hub"), "HF_DATASETS_CACHE": str(Path(home) / "datasets"),
               "HF_MODULES_CACHE": str(Path(home) / "modules"), "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
               "TRANSFORMERS_OFFLINE": "0", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        if token is not None:
            env["HF_TOKEN"] = token
        return env

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (for assertions)."""
        with self.state.lock:
            commit = self.state.repos[(repo_type, repo_id)].resolve(revision)
            return {p: b.data for p, b in commit.files.items()} if commit else {}

    def commits(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Titles of all commits of a repo, oldest first (the initial commit included)."""
        with self.state.lock:
            return [c.title for c in self.state.repos[(repo_type, repo_id)].commits.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Hugging Face Hub stand-in (loopback only).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--lifetime", type=float, default=600.0, help="seconds before the server stops by itself")
    args = parser.parse_args()
    hub = LocalHub(lifetime=args.lifetime, port=args.port).start()
    print(f"HF_ENDPOINT={hub.endpoint} HF_HUB_DISABLE_XET=1  (stops in {args.lifetime:.0f} s)", flush=True)
    try:
        while hub.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
