"""Command lines and environments for the three backup tools under comparison.

Each tool is configured the way it would be run in production (aws exactly as the old CronJob ran it),
and each gets a scrubbed environment so settings of the machine or of another tool cannot leak in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from libgen import BACKED_UP

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"
VENV_BIN = REPO / ".venv" / "bin"
AWS_VENV = BENCH_DIR / ".venv-aws"
AWS_BIN = AWS_VENV / "bin" / "aws"
SYNC_BIN = VENV_BIN / "immich-sync"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
REGION = CREDS["AWS_REGION"]

# The old CronJob's ~/.aws/config, verbatim in its s3 section.
AWS_CONFIG = f"""[default]
region = {REGION}
s3 =
  multipart_threshold = 64MB
  multipart_chunksize = 64MB
  max_concurrent_requests = 20
"""

# The CronJob's loop; folders come from BACKED_UP so all tools copy exactly the same set.
AWS_LOOP = """rc=0
for dir in $FOLDERS; do
  aws s3 sync "$LIB/$dir" "s3://$BUCKET/$PREFIX$dir/" --endpoint-url "$URL" --only-show-errors || rc=$?
done
exit $rc
"""

# Variables that would silently redirect or reconfigure a tool if inherited from the bench's shell.
SCRUB = (
    "BUCKET_NAME",
    "MEDIA_PREFIX",
    "LIBRARY_ROOT",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
)


@dataclass(frozen=True)
class Target:
    """Where one tool writes for one library: a bucket of its own plus a prefix ending in '/'."""

    url: str
    bucket: str
    prefix: str


@dataclass(frozen=True)
class Invocation:
    cmd: list[str]
    env: dict[str, str]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB and not k.startswith("RCLONE_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def ensure_aws() -> Path:
    """Create the side venv with awscli on first use; it is gitignored and reused afterwards."""
    if not AWS_BIN.exists():
        subprocess.run(["python3", "-m", "venv", str(AWS_VENV)], check=True)
        pip = AWS_VENV / "bin" / "pip"
        subprocess.run([str(pip), "install", "--quiet", "--upgrade", "pip", "awscli"], check=True)
    return AWS_BIN


def ensure_rclone() -> str:
    """Install Debian's rclone when missing (the bench runs as root on a Debian machine)."""
    path = shutil.which("rclone")
    if path:
        return path
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "rclone"], check=True, env=env)
    path = shutil.which("rclone")
    if not path:
        raise RuntimeError("rclone still missing after apt-get install")
    return path


def sync_available() -> tuple[bool, str]:
    """immich-sync is developed alongside the bench; report (not crash) when it is not installed yet."""
    if not SYNC_BIN.exists():
        return False, f"{SYNC_BIN} not found"
    proc = subprocess.run([str(SYNC_BIN), "backup", "--help"], capture_output=True, text=True, env=base_env())
    if proc.returncode != 0:
        return False, f"`immich-sync backup --help` exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
    return True, ""


def aws_sync(lib: Path, t: Target, creds: Mapping[str, str] = CREDS) -> Invocation:
    """`creds` replaces the moto credentials for servers with keys of their own (Ceph RGW)."""
    config = WORK / "aws-config"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(AWS_CONFIG)
    env = base_env() | dict(creds)
    env.update(
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(WORK / "aws-credentials-none"),
        PATH=f"{AWS_BIN.parent}{os.pathsep}{env.get('PATH', '')}",
        LIB=str(lib),
        BUCKET=t.bucket,
        PREFIX=t.prefix,
        URL=t.url,
        FOLDERS=" ".join(BACKED_UP),
    )
    return Invocation(["bash", "-c", AWS_LOOP], env)


def rclone_filters() -> list[str]:
    rules: list[str] = []
    for folder in BACKED_UP:
        rules += ["--filter", f"+ /{folder}/**"]
    return [*rules, "--filter", "- **"]


def rclone_copy(
    lib: Path,
    t: Target,
    fast_list: bool = False,
    transfers: int | None = 16,
    creds: Mapping[str, str] = CREDS,
) -> Invocation:
    """`transfers=None` leaves rclone's own default (4), as an operator who never tuned it would run it."""
    config = WORK / "rclone.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.touch()
    env = base_env()
    # rclone refuses to start when AWS_CA_BUNDLE is set (it is, machine-wide here).
    env.pop("AWS_CA_BUNDLE", None)
    env.update(
        RCLONE_CONFIG=str(config),
        RCLONE_CONFIG_BENCH_TYPE="s3",
        RCLONE_CONFIG_BENCH_PROVIDER="Other",
        RCLONE_CONFIG_BENCH_ENV_AUTH="false",
        RCLONE_CONFIG_BENCH_ENDPOINT=t.url,
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=creds["AWS_ACCESS_KEY_ID"],
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=creds["AWS_SECRET_ACCESS_KEY"],
        RCLONE_CONFIG_BENCH_REGION=creds.get("AWS_REGION", REGION),
        RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true",
    )
    cmd = [
        ensure_rclone(),
        "copy",
        str(lib),
        f"bench:{t.bucket}/{t.prefix}",
        "--size-only",
        "--s3-no-head",
        "--s3-no-check-bucket",
        *(["--transfers", str(transfers)] if transfers is not None else []),
        *rclone_filters(),
        "-q",
    ]
    if fast_list:
        cmd.append("--fast-list")
    return Invocation(cmd, env)


def _sync_env(creds: Mapping[str, str] = CREDS) -> dict[str, str]:
    env = base_env() | dict(creds)
    empty = WORK / "aws-credentials-none"
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty))
    return env


def immich_sync(
    lib: Path,
    t: Target,
    *extra: str,
    creds: Mapping[str, str] = CREDS,
    env: Mapping[str, str] | None = None,
) -> Invocation:
    """`extra` goes after the standard flags; `env` adds variables (e.g. TZ for a timetable)."""
    cmd = [
        str(SYNC_BIN),
        "backup",
        "--library-root",
        str(lib),
        "--bucket",
        t.bucket,
        "--prefix",
        t.prefix,
        "--endpoint-url",
        t.url,
        "--no-progress",
        "--settle-seconds",
        "0",
        "--log-format",
        "text",
        "--quiet",
        *extra,
    ]
    return Invocation(cmd, _sync_env(creds) | dict(env or {}))


def immich_plan(lib: Path, t: Target) -> Invocation:
    cmd = [
        str(SYNC_BIN),
        "plan",
        "--library-root",
        str(lib),
        "--bucket",
        t.bucket,
        "--prefix",
        t.prefix,
        "--endpoint-url",
        t.url,
        "--settle-seconds",
        "0",
        "-o",
        "json",
    ]
    return Invocation(cmd, _sync_env())


def versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=base_env())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unavailable ({exc})"
        text = (proc.stdout or proc.stderr).strip()
        return text.splitlines()[0] if text else f"unavailable (exit {proc.returncode})"

    out = {
        "aws": first_line([str(AWS_BIN), "--version"]) if AWS_BIN.exists() else "not installed",
        "rclone": first_line(["rclone", "version"]) if shutil.which("rclone") else "not installed",
    }
    for label, dist in (("immich-sync", "immich-offsite-backup"), ("moto", "moto")):
        try:
            out[label] = f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            out[label] = "not installed"
    return out
