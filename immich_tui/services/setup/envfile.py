"""The `.env` file the offsite Secrets are made from, read the way shells and Docker Compose write it.

Setup reads only the file, never the shell's environment, and refuses what it cannot read for sure rather
than guess; no message quotes a line, as it may hold a key. Only a regular file of at most 1 MiB is read:
`--env-file /dev/zero` or a named pipe would otherwise never end (or never start) and a huge file fill
the memory, where one line and exit 2 say what is wrong. Validating the values is `config`'s job.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from immich_tui.services.setup.errors import EnvFileError

PREFIX = "OFFSITE_BACKUP_"  # the variables setup owns; a duplicate of one of them is refused

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_BYTES = 1024 * 1024  # a .env is a few hundred bytes; anything near this is not one
_KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
}


def read_env_file(path: Path) -> dict[str, str]:
    """The file's variables. Only the file counts: the shell's environment never fills a gap."""
    data = _read_capped(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EnvFileError(f"{path}:{line}: not valid UTF-8") from None
    return parse_env(text, str(path))


def _read_capped(path: Path) -> bytes:
    """Open without blocking (a named pipe with no writer would wait forever), look at what was opened,
    and read only a regular file, at most `MAX_BYTES`. A symbolic link to a file is followed: a `.env`
    kept elsewhere and linked is common."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EnvFileError(f"env file {path} does not exist (start from .env.example)") from None
    except IsADirectoryError:
        raise EnvFileError(f"env file {path} is a directory") from None
    except OSError as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise EnvFileError(f"env file {path} is a directory")
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
            raise EnvFileError(
                f"env file {path} is not a regular file (it is {kind}): setup reads only a file such as .env"
            )
        if info.st_size > MAX_BYTES:
            raise EnvFileError(f"env file {path} is larger than 1 MiB ({info.st_size} bytes): not a .env file")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:  # the file may grow while it is read: never more than the cap and a byte
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:
            raise EnvFileError(f"env file {path} is larger than 1 MiB (it grew while read): not a .env file")
        return b"".join(chunks)
    except OSError as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def parse_env(text: str, source: str = ".env") -> dict[str, str]:
    """`NAME=VALUE` lines as shells and Docker Compose write them: blank lines, `#` comments, an optional
    `export `, values bare (a ` #` starts a comment) or in single (literal) or double quotes (`\\"` and
    `\\\\` escaped). Anything else is refused rather than guessed, and no message quotes the line: it
    may hold a key."""
    values: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("export ", "export\t")):
            line = line[len("export") :].lstrip()
        name, sep, rest = line.partition("=")
        name = name.strip()
        where = f"{source}:{number}"
        if not sep or not _NAME.fullmatch(name):
            raise EnvFileError(f"{where}: expected NAME=VALUE")
        if name in seen and name.startswith(PREFIX):
            raise EnvFileError(f"{where}: {name} is set twice (also on line {seen[name]})")
        seen[name] = number
        values[name] = _value(rest, where, name)
    return values


def _value(rest: str, where: str, name: str) -> str:
    text = rest.strip()
    if text[:1] in ('"', "'"):
        quote, chars, i = text[0], [], 1
        while i < len(text):
            ch = text[i]
            if quote == '"' and ch == "\\" and text[i + 1 : i + 2] in ('"', "\\"):
                chars.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                tail = text[i + 1 :].strip()
                if tail and not tail.startswith("#"):
                    raise EnvFileError(f"{where}: unexpected text after the closing quote of {name}")
                return "".join(chars)
            chars.append(ch)
            i += 1
        raise EnvFileError(f"{where}: the value of {name} has no closing {quote}")
    return re.split(r"(?:^|\s)#", rest, maxsplit=1)[0].strip()


def env_file_warnings(path: Path) -> list[str]:
    """The `.env` holds both key pairs: one that others can read is worth a word."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return []
    if mode & 0o077:
        return [f"{path} is readable by other users (mode {mode:04o}) and holds S3 keys: chmod 600 {path}"]
    return []
