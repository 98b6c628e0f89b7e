"""A git host for tests, on 127.0.0.1: git's own `git http-backend` (smart HTTP, protocol
v2) behind token authentication, and a stand-in for a forge's GitHub-compatible REST API
(repository lists, GitHub App installation tokens).

Usage: githost.py ROOT TOKEN [APP_PUBLIC_KEY_PEM]
Repositories are the bare ones under ROOT/<owner>/<name>.git, served at
/git/<owner>/<name>; the API is under /api. Prints "githost listening on PORT".
Requests it refused are counted at GET /stats (no auth).
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT, TOKEN = sys.argv[1], sys.argv[2]
APP_KEY = sys.argv[3] if len(sys.argv) > 3 else None
STATS = {"refused": 0, "git": 0}
LOCK = threading.Lock()


def repositories():
    out = []
    for owner in sorted(os.listdir(ROOT)):
        for name in sorted(os.listdir(os.path.join(ROOT, owner))):
            if name.endswith(".git"):
                out.append((owner, name[:-4]))
    return out


def b64url(data):
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def app_jwt_ok(jwt):
    """Whether `jwt` is an RS256 token signed with the app's key (checked with openssl)."""
    if not APP_KEY:
        return False
    try:
        header, payload, signature = jwt.split(".")
        if json.loads(b64url(header)).get("alg") != "RS256":
            return False
        with tempfile.NamedTemporaryFile() as sig:
            sig.write(b64url(signature))
            sig.flush()
            check = subprocess.run(
                ["openssl", "dgst", "-sha256", "-verify", APP_KEY, "-signature", sig.name],
                input=f"{header}.{payload}".encode(),
                capture_output=True,
            )
        return check.returncode == 0 and json.loads(b64url(payload)).get("iss") == "4242"
    except Exception:
        return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def token(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:]
        if auth.startswith("Basic "):
            user_pass = base64.b64decode(auth[6:]).decode()
            return user_pass.split(":", 1)[1]
        return None

    def answer(self, status, body, content_type="application/json", extra=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def refuse(self):
        with LOCK:
            STATS["refused"] += 1
        self.answer(401, {"message": "Bad credentials"}, extra=[("WWW-Authenticate", 'Basic realm="git"')])

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/stats":
            return self.answer(200, STATS)
        if method == "POST" and path.startswith("/api/app/installations/"):
            jwt = self.token() or ""
            if not app_jwt_ok(jwt):
                return self.refuse()
            return self.answer(201, {"token": TOKEN, "expires_at": "2099-01-01T00:00:00Z"})
        if self.token() != TOKEN:
            return self.refuse()
        if path == "/api/user/repos" or path == "/api/installation/repositories":
            page = int(dict(p.split("=") for p in query.split("&") if "=" in p).get("page", "1"))
            repos = [
                {
                    "id": 1000 + i,
                    "name": name,
                    "owner": {"login": owner},
                    "html_url": f"http://127.0.0.1:{self.server.server_port}/git/{owner}/{name}",
                    "default_branch": "main",
                }
                for i, (owner, name) in enumerate(repositories())
            ][(page - 1) * 100 : page * 100]
            if path == "/api/user/repos":
                return self.answer(200, repos)
            return self.answer(200, {"total_count": len(repos), "repositories": repos})
        if path.startswith("/git/"):
            return self.git(method, path[len("/git"):], query, body)
        self.answer(404, {"message": "Not Found"})

    def git(self, method, path, query, body):
        with LOCK:
            STATS["git"] += 1
        parts = path.split("/")
        # /owner/name[.git]/rest...
        if len(parts) < 4:
            return self.answer(404, {"message": "Not Found"})
        name = parts[2] if parts[2].endswith(".git") else parts[2] + ".git"
        path_info = "/".join([""] + [parts[1], name] + parts[3:])
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_METHOD": method,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "test",
            "REMOTE_ADDR": "127.0.0.1",
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(": ")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"githost listening on {server.server_port}", flush=True)
server.serve_forever()
