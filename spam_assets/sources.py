"""The default source: the SMS Spam Collection, from a local copy or downloaded once."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import zipfile
from pathlib import Path

from spam_assets.settings import SMS_PATH_ENV, paths

SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_MEMBER = "SMSSpamCollection"


class SourceUnavailable(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_sms_path(home: str | Path | None = None, download: bool = True, url: str = SMS_URL) -> Path:
    """$SPAM_SMS_PATH, else <home>/downloads/SMSSpamCollection (fetched once, sha256-verified)."""
    configured = os.environ.get(SMS_PATH_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise SourceUnavailable(f"{SMS_PATH_ENV}={configured} is not a file")
        return path
    target = paths(home).downloads / SMS_MEMBER
    if target.is_file() and sha256_of(target) == SMS_SHA256:
        return target
    if not download:
        raise SourceUnavailable(_how_to_point(target, "it is not downloaded yet"))
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            archive = zipfile.ZipFile(io.BytesIO(response.read()))
        data = archive.read(SMS_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise SourceUnavailable(_how_to_point(target, f"downloading {url} failed: {error}")) from error
    if hashlib.sha256(data).hexdigest() != SMS_SHA256:
        raise SourceUnavailable(_how_to_point(target, f"the download from {url} does not match sha256 {SMS_SHA256}"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def _how_to_point(target: Path, why: str) -> str:
    return (
        f"The SMS Spam Collection is not available: {why}. Point the platform at a local copy with "
        f"`export {SMS_PATH_ENV}=/path/to/SMSSpamCollection` (the file from the UCI repository, "
        f"sha256 {SMS_SHA256}), or place it at {target}."
    )
