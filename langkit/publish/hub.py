"""Pushing a release to the Hugging Face Hub (or any server that speaks its API) and getting it back,
verified. The real ``huggingface_hub`` client does the talking, so ``HF_ENDPOINT`` and ``HF_TOKEN`` apply."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from langkit.publish.manifest import (
    MANIFEST_NAME,
    PublishError,
    VerificationError,
    VerifyReport,
    keep_if_verified,
    verify_release,
)
from langkit.publish.signing import load_public_key
from langkit.utils import get_logger, sha256_file, temp_dir

log = get_logger("publish")

DEFAULT_COMMIT_MESSAGE = "Upload langkit release"
_DOWNLOAD_NAME = "download"  # temp_dir's folder for it (.tmp-download) lies inside an existing empty out_dir


def _refuse_offline(action: str) -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise PublishError(f"cannot {action}: HF_HUB_OFFLINE is set, so huggingface_hub makes no requests. "
                           "Unset it (HF_HUB_OFFLINE=0) to talk to the Hub or to the server HF_ENDPOINT names.")


def _git_blob_id(path: Path) -> str:
    """The id git (and the Hub's tree listing) gives a regular file's content."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check_tag(api: Any, repo_id: str, tag: str, manifest: Path) -> str | None:
    """The commit ``tag`` names on ``repo_id`` (None if there is no such tag); :class:`PublishError` if that
    commit holds another release than ``manifest`` describes (the manifest lists every file, so an
    identical manifest means identical files)."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        tagged = api.model_info(repo_id, revision=tag).sha
        remote = [f for f in api.list_repo_tree(repo_id, revision=tag, repo_type="model")
                  if f.path == MANIFEST_NAME]
    except RevisionNotFoundError:
        return None
    lfs = getattr(remote[0], "lfs", None) if remote else None
    same = bool(remote) and (lfs.sha256 == sha256_file(manifest) if lfs else remote[0].blob_id == _git_blob_id(manifest))
    if not same:
        raise PublishError(f"tag {tag!r} already exists on {repo_id} at commit {tagged}, which holds another "
                           "release; a published tag should never move: choose a new tag")
    return str(tagged)


def push_release(
    release_dir: Path,
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    tag: str = "",
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Verify a release, then make the Hub repository ``repo_id`` hold exactly its files, in one commit on
    top of the branch as it was when the push began (a push made meanwhile by someone else is not overwritten).

    Creates the repository if needed (``private`` applies only then; a private push into an existing
    public repository is refused), uploads the folder, deletes remote files the release no longer has
    (except ``.gitattributes``), and tags the commit when ``tag`` is given. A tag that already names
    other files is refused before anything is uploaded; one that names these same files is left as it
    is, so pushing a release again is harmless. ``endpoint`` and ``token`` default to huggingface_hub's
    own (``HF_ENDPOINT``, ``HF_TOKEN`` or the saved login). Returns the commit id.
    """
    from huggingface_hub import CommitInfo, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    release_dir = Path(release_dir)
    report = verify_release(release_dir)
    if not report.ok:
        raise VerificationError(f"refusing to push {release_dir}: {report.summary()}", report)
    _refuse_offline(f"push {release_dir} to {repo_id}")

    api = HfApi(endpoint=endpoint, token=token)
    url = api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
    # The branch as it is now: the commit must land on it, so that if someone else pushes meanwhile the Hub
    # refuses it (412) instead of this push deleting their files from a stale listing.
    repo = api.model_info(repo_id)
    # create_repo(exist_ok=True) leaves an existing repository as it is: never upload a release meant to
    # stay private into a public one
    if private and repo.private is not True:
        raise PublishError(f"{repo_id} already exists and is public, but a private push was asked for: nothing "
                           "was uploaded (make the repository private on the Hub, or push without private)")
    # check the tag before uploading, so that a refused tag leaves the branch as it was
    if tag:
        _check_tag(api, repo_id, tag, release_dir / MANIFEST_NAME)
    head = repo.sha
    try:
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=release_dir,
            commit_message=commit_message,
            delete_patterns="*",  # the repository mirrors the release: stale files would fail verification
            ignore_patterns=[".cache", ".cache/*"],
            parent_commit=head,
        )
    except HfHubHTTPError as err:
        if err.response is None or err.response.status_code != 412:
            raise
        raise PublishError(f"{repo_id} changed while this release was being pushed (another push since commit "
                           f"{head}): nothing was committed; check what is there, then push again") from None
    if not isinstance(info, CommitInfo):  # pragma: no cover - only with run_as_future=True
        raise PublishError(f"unexpected answer from upload_folder: {info!r}")
    commit = str(info.oid)
    log.info("pushed %s to %s (commit %s)", release_dir, url, commit)

    if tag:
        try:
            api.create_tag(repo_id, tag=tag, revision=commit, repo_type="model",
                           tag_message=f"langkit release {tag}")
        except HfHubHTTPError as err:
            if err.response is None or err.response.status_code != 409:
                raise
            # the tag was there already (checked above: with these very files), or came since (checked again)
            tagged = _check_tag(api, repo_id, tag, release_dir / MANIFEST_NAME)
            if tagged != commit:
                log.info("tag %r of %s already names commit %s, which holds this same release", tag, repo_id, tagged)
                return commit
        log.info("tagged %s of %s as %r", commit, repo_id, tag)
    return commit


def _download_failure(where: str, endpoint: str | None, err: Exception) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    server = endpoint or constants.ENDPOINT
    if isinstance(err, RepositoryNotFoundError):
        what = f"{server} has no repository {where.split('@')[0]} (or it is private: set HF_TOKEN)"
    elif isinstance(err, RevisionNotFoundError):
        what = f"{server} has no revision {where.split('@')[1]} of {where.split('@')[0]}"
    else:
        # huggingface_hub wraps a refused connection in a long LocalEntryNotFoundError: name the cause
        cause = err.__cause__ or err.__context__ or err
        detail = " ".join(f"{type(cause).__name__}: {cause}".split())
        what = (f"the download from {server} failed ({detail[:300]}); check that the server answers there "
                "(HF_ENDPOINT names it), then run the same command again")
    return f"cannot download {where}: {what}. Nothing was kept."


def download_release(
    repo_id: str,
    out_dir: Path,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    public_key: Path | str | None = None,
) -> VerifyReport:
    """Download a release (a branch, tag or commit of ``repo_id``) into a new or empty ``out_dir`` and
    verify it against its manifest, and with ``public_key`` (the publisher's, a PEM file) against its
    signature too; :class:`VerificationError` if it does not match, or is unsigned when a key is given.

    The files land in a hidden folder and are moved into ``out_dir`` only once verified: a download that
    fails, does not verify or is interrupted (an error, Ctrl-C) keeps nothing, so it can simply be run
    again. (A killed process leaves the hidden folder, ``.tmp-NAME`` beside a new ``out_dir`` or
    ``.tmp-download`` inside an existing empty one; the next download there clears it.)"""
    from huggingface_hub import snapshot_download

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(p.name != f".tmp-{_DOWNLOAD_NAME}" for p in out_dir.iterdir())):
        raise PublishError(f"{out_dir} exists and is not an empty folder: download a release into a new "
                           "folder (files left from another release would fail verification)")
    if public_key is not None:
        load_public_key(public_key)  # a key that cannot be used: said before downloading anything
    _refuse_offline(f"download {repo_id}")
    where = f"{repo_id}@{revision or 'main'}"
    # An existing empty folder (maybe a mount point, or ".") is filled in place; a new one is renamed in whole.
    existing = out_dir.is_dir()
    tmp = temp_dir(out_dir / _DOWNLOAD_NAME if existing else out_dir)
    try:
        try:
            snapshot_download(repo_id, repo_type="model", revision=revision, local_dir=tmp,
                              endpoint=endpoint, token=token)
        except Exception as err:  # unreachable server, unknown repo or revision, a file cut short
            raise PublishError(_download_failure(where, endpoint, err)) from err
        report = keep_if_verified(tmp, out_dir, public_key, f"downloaded {where}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("downloaded %s into %s: %s", where, out_dir, report.summary())
    return report
