"""Offline bundles: one tar file holding a release (its files, manifest and signature), to carry to a
machine without network, and the way back, which verifies before it keeps anything.

The archive is plain POSIX tar (the weights are safetensors, which do not compress), written the same way
every time: members sorted, under one top folder named after the bundle, regular files only, mode 0644,
owner 0, time 0. Unbundling reads it as untrusted input: a member whose path is absolute or climbs out
of the folder, a link, a device file or a pickle is refused before anything is written, and the files
are written into a hidden folder that becomes ``out_dir`` only once the manifest (and, with a key, the
signature) verifies. An interrupted, truncated or tampered bundle leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from langkit.publish.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    PublishError,
    VerificationError,
    VerifyReport,
    is_pickle,
    keep_if_verified,
    read_manifest,
    verify_release,
)
from langkit.publish.signing import load_public_key
from langkit.utils import get_logger, temp_dir

log = get_logger("publish")

_UNBUNDLE_NAME = "unbundle"  # temp_dir's folder (.tmp-unbundle) inside an existing empty out_dir
_CHUNK = 1 << 20


class BundleError(PublishError):
    """A bundle cannot be written, or is not a safe langkit bundle."""


def bundle_release(release_dir: str | Path, out: str | Path, public_key: str | Path | None = None) -> Path:
    """Write ``out`` (a ``.tar``): the release's files as its manifest lists them, the manifest, and
    ``model.sig`` when signed, under one top folder named after ``out``. The release is verified first
    (with ``public_key``, its signature too). ``out`` is written beside itself and renamed in; an existing
    file is never replaced."""
    release = Path(release_dir)
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise BundleError(f"{out} exists: it is left as it is; remove it or choose another name")
    report = verify_release(release, public_key)
    if not report.ok:
        raise VerificationError(f"refusing to bundle {release}: {report.summary()}", report)
    # manifest and signature first: a bundle cut short then lacks files, which the manifest names
    signed = (release / SIGNATURE_NAME).is_file()
    names = [MANIFEST_NAME] + ([SIGNATURE_NAME] if signed else []) + sorted(read_manifest(release))
    top = out.name.removesuffix(".tar") or "release"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    try:
        with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel in names:
                path = release / rel
                info = tarfile.TarInfo(f"{top}/{rel}")
                info.size = path.stat().st_size
                info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("bundled %s into %s (%d files, %.1f MB)%s", release, out, len(names), out.stat().st_size / 1e6,
             "" if signed else "; the release is not signed")
    return out


def _member_problem(member: tarfile.TarInfo) -> str:
    """Why a member cannot be unpacked safely ("" when it can)."""
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a named pipe"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file or folder"
    name = member.name
    pure = PurePosixPath(name)
    if not name or name.startswith("/") or pure.is_absolute() or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in pure.parts:
        return "climbs out of the folder ('..')"
    if member.isreg() and is_pickle(pure.name):
        return "is a pickled file (code runs when it is loaded; a release never holds one)"
    return ""


def _check_members(bundle: Path, members: list[tarfile.TarInfo]) -> tuple[str, list[tarfile.TarInfo]]:
    """The top folder and the regular files to write, after checking every member; :class:`BundleError`
    naming each unsafe member."""
    problems = [f"{m.name!r} {why}" for m in members if (why := _member_problem(m))]
    if problems:
        raise BundleError(f"{bundle} is refused, nothing was written: " + "; ".join(problems[:10])
                          + (f"; ... ({len(problems) - 10} more)" if len(problems) > 10 else ""))
    tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
    if len(tops) != 1:
        raise BundleError(f"{bundle} is not a langkit bundle: its files should lie in one top folder, found "
                          f"{len(tops)} ({', '.join(sorted(tops)[:5]) or 'none'})")
    (top,) = tops
    files = [m for m in members if m.isreg()]
    seen: set[str] = set()
    for m in files:
        rel = PurePosixPath(m.name).relative_to(top).as_posix()
        if rel == "." or rel in seen:
            raise BundleError(f"{bundle} is refused, nothing was written: {m.name!r} appears twice or is the top "
                              "folder itself")
        seen.add(rel)
    if MANIFEST_NAME not in seen:
        raise BundleError(f"{bundle} holds no {top}/{MANIFEST_NAME}: it is not a langkit release bundle "
                          "(make one with `langkit publish bundle`)")
    return top, files


def unbundle_release(bundle: str | Path, out_dir: str | Path, public_key: str | Path | None = None) -> VerifyReport:
    """Unpack a bundle into a new or empty ``out_dir``, keeping it only if it verifies: the manifest always,
    the signature of ``public_key``'s holder too when a key is given (an unsigned bundle is then refused).
    Unsafe members (paths out of the folder, links, device files, pickles) are refused before anything is
    written; a bundle that is not a tar file, is cut short, or does not verify leaves nothing behind."""
    bundle, out_dir = Path(bundle), Path(out_dir)
    if public_key is not None:
        load_public_key(public_key)  # a key that cannot be used: said before reading the bundle
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} not found" + (" (it is a folder)" if bundle.is_dir() else ""))
    if out_dir.exists() and (not out_dir.is_dir() or any(p.name != f".tmp-{_UNBUNDLE_NAME}" for p in out_dir.iterdir())):
        raise BundleError(f"{out_dir} exists and is not an empty folder: unbundle into a new folder")
    try:
        tar = tarfile.open(bundle, mode="r:*")  # plain tar, or a bundle someone compressed afterwards
    except (tarfile.TarError, EOFError) as err:
        raise BundleError(f"{bundle} is not a tar file, or is damaged ({err}): make it again with "
                          "`langkit publish bundle`, or copy it again if it was cut short") from None
    existing = out_dir.is_dir()
    tmp: Path | None = None
    with tar:
        try:
            members = tar.getmembers()  # reads the whole index: a truncated bundle fails here or below
            top, files = _check_members(bundle, members)
            need = sum(m.size for m in files)
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(out_dir if existing else out_dir.parent).free
            if need > free:
                raise BundleError(f"{bundle} holds {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free "
                                  f"where {out_dir} would go: nothing was written")
            tmp = temp_dir(out_dir / _UNBUNDLE_NAME if existing else out_dir)
            for m in files:
                dest = tmp / PurePosixPath(m.name).relative_to(top)
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(m)
                if source is None:  # pragma: no cover - regular members always have data
                    raise BundleError(f"{bundle}: cannot read {m.name!r}")
                with source, open(dest, "xb") as f:
                    while chunk := source.read(_CHUNK):
                        f.write(chunk)
                os.chmod(dest, 0o644)
            report = keep_if_verified(tmp, out_dir, public_key, f"unpacked {bundle}")
        except (tarfile.TarError, EOFError) as err:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(f"{bundle} is damaged or cut short ({err}): copy it again; nothing was kept") from None
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("unbundled %s into %s: %s", bundle, out_dir, report.summary())
    return report
