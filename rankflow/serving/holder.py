"""The models a scoring service serves: ``@champion`` and, for a canary share, ``@challenger``.

:class:`ModelHolder` resolves the serving model's aliases in the MLflow registry, downloads a
version's checkpoint once (``models:/<name>/<version>``), and keeps the loaded arms in one
immutable mapping. A background thread re-reads the aliases every ``alias_poll_seconds``; when
one moved it loads the new version *first* and then replaces the whole mapping with a single
reference assignment, so a request sees the old arms or the new ones, never a half-loaded model,
and no request waits for a download.

The arm of a request is a stable function of the user id (:func:`canary_bucket`): the same user
always gets the same arm while the share is unchanged, in every process.

A version trained on another feature service than the one the service serves is refused
(:class:`ModelRefused`): its inputs would be other features under the same names, or missing.
So is a version that cannot be loaded (missing or corrupt artifacts). The holder keeps serving
what it had for that arm and reports the refusal as its last error. A ``@champion`` that names
no version any more (the alias removed, or the version it named deleted, which removes the
alias with it) does not unload the champion either: a working model beats none. Each arm kept
this way is listed in :attr:`ModelHolder.kept` with the reason (``/readyz`` shows it).
A ``@challenger`` that goes away is dropped: that is how a canary ends.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.checkpoint import MANIFEST, CheckpointError
from models.spec import RequestTransform
from rankflow.errors import RankflowError
from rankflow.registry.aliases import alias_version
from rankflow.registry.promotion import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from models.scoring import Scorer

log = logging.getLogger(__name__)

ARMS = (CHAMPION, CHALLENGER)
_CANARY_SALT = b"rankflow-canary\x1f"


# What a model that records no feature service was trained on (see load_version).
UNRECORDED_FEATURE_SERVICE = "ctr_ranker_v1"


class ModelRefused(RankflowError):
    """A registered version this service cannot or must not serve (it cannot be loaded, or was
    trained on another feature service)."""


def canary_bucket(user_id: int) -> float:
    """A uniform number in [0, 1) fixed by the user id (BLAKE2b, not Python's salted hash)."""
    digest = hashlib.blake2b(_CANARY_SALT + str(int(user_id)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, ready to score plain columns."""

    name: str
    version: str
    alias: str
    kind: str
    run_id: str | None
    scorer: Scorer
    transform: RequestTransform

    def predict(self, columns: Mapping[str, Any]) -> np.ndarray:
        """P(click) per row of ``columns`` (float64), via the request-sized transform."""
        tensors = self.transform(columns)
        with torch.inference_mode():
            logits = self.scorer.model(tensors.sparse, tensors.dense, tensors.cross)
        return torch.sigmoid(logits.double()).numpy()


def load_version(
    client: MlflowClient,
    name: str,
    version: str,
    alias: str,
    cache_dir: Path,
    *,
    feature_service: str,
) -> LoadedModel:
    """Load ``models:/<name>/<version>`` through the local cache; :class:`ModelRefused` if it
    was trained on another feature service than ``feature_service``.

    The cache is keyed by the artifact's content (:func:`artifact_digest`), so an artifact
    repaired or replaced under the same version is fetched again; a cached copy that fails its
    checkpoint manifest is dropped rather than reused."""
    from rankflow.tracking.pyfunc import artifact_digest

    mv = client.get_model_version(name, version)
    # The version's own artifact location, not ``models:/...``: MLflow resolves that form
    # through the process-global registry URI, which is not this service's.
    uri = client.get_model_version_download_uri(name, version)
    target = cache_dir / f"{name}-v{version}-{artifact_digest(uri)}"
    fresh = _cached_checkpoint(target) is None
    if fresh:
        _download(uri, target)
    _check_feature_service(target, name, version, alias, feature_service)
    scorer = _load_scorer(uri, target, fresh=fresh)
    return LoadedModel(
        name=name,
        version=str(version),
        alias=alias,
        kind=scorer.kind,
        run_id=mv.run_id,
        scorer=scorer,
        transform=RequestTransform(scorer.spec),
    )


def _check_feature_service(
    downloaded: Path, name: str, version: str, alias: str, feature_service: str
) -> None:
    from rankflow.tracking.pyfunc import recorded_feature_service

    # A version logged before models recorded their feature service was trained through
    # ctr_ranker_v1: the training set could be built through no other. Read it as such, so an
    # upgrade does not refuse a working champion.
    trained_on = recorded_feature_service(downloaded) or UNRECORDED_FEATURE_SERVICE
    if trained_on != feature_service:
        raise ModelRefused(
            f"{name} v{version} (@{alias}) was trained on feature service {trained_on!r}; "
            "this service serves "
            f"{feature_service!r} (feature_service): not loaded. Train a model on "
            f"{feature_service!r}, or serve with the feature service the model was trained on"
        )


def _load_scorer(uri: str, target: Path, *, fresh: bool) -> Scorer:
    """The checkpoint in ``target``, verified against its manifest as it loads. A cached copy
    that fails is fetched again once (damaged on disk); a fresh one that fails is dropped, so
    the next attempt fetches the artifact again (repaired by then, perhaps)."""
    if not fresh:
        try:
            return _scorer(target)
        except CheckpointError as error:
            log.warning("cached model %s fails its manifest (%s): fetching it again", target, error)
            shutil.rmtree(target, ignore_errors=True)
            _download(uri, target)
    try:
        return _scorer(target)
    except CheckpointError:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _scorer(target: Path) -> Scorer:
    from models.scoring import Scorer

    checkpoint = _cached_checkpoint(target)
    if checkpoint is None:
        raise CheckpointError(f"{target}: no checkpoint in the cached model")
    scorer = Scorer.from_checkpoint(checkpoint)
    scorer.model.eval()
    return scorer


def _download(uri: str, target: Path) -> None:
    """Fetch the model into ``target`` whole or not at all: a download cut short (a killed
    process, a full disk) must never pass for a cached model."""
    from rankflow.tracking.pyfunc import checkpoint_of

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
    try:
        checkpoint_of(uri, partial)
        try:
            partial.rename(target)
        except OSError:  # another process cached the same content first: theirs will do
            if _cached_checkpoint(target) is None:
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _failure(name: str, version: str, alias: str, error: Exception) -> str:
    if isinstance(error, ModelRefused):
        return str(error)
    return f"{name} v{version} (@{alias}) could not be loaded: {type(error).__name__}: {error}"


def _cached_checkpoint(target: Path) -> Path | None:
    found = sorted(target.rglob(MANIFEST)) if target.is_dir() else []
    return found[0].parent if found else None


class ModelHolder:
    """Follows the serving model's aliases; see the module docstring."""

    def __init__(
        self,
        client_factory: Callable[[], MlflowClient],
        model_name: str,
        cache_dir: Path,
        *,
        feature_service: str,
        canary_share: float = 0.0,
        poll_seconds: float = 10.0,
        on_swap: Callable[[str, LoadedModel | None, LoadedModel | None], None] | None = None,
        pinned: Mapping[str, str] | None = None,
    ) -> None:
        self._client_factory = client_factory
        self.model_name = model_name
        self.cache_dir = cache_dir
        self.feature_service = feature_service
        self.canary_share = canary_share
        self.poll_seconds = poll_seconds
        self._on_swap = on_swap
        # arm -> version served regardless of the aliases (the canary phase measures exactly the
        # two versions it decided about, even if another process moves an alias meanwhile).
        self.pinned = dict(pinned) if pinned is not None else None
        self._arms: Mapping[str, LoadedModel] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        # arm -> why it serves its last good model instead of what the registry names
        self.kept: dict[str, str] = {}

    @property
    def arms(self) -> Mapping[str, LoadedModel]:
        return self._arms

    def refresh(self) -> list[str]:
        """Re-read the aliases; load what moved; swap atomically. Returns the arms that changed.

        A version :func:`load_version` refuses or cannot load leaves its arm as it was (the last
        good model, or none), as does a ``@champion`` that names no version any more; the
        others are swapped in, then :class:`ModelRefused` names the failures."""
        client = self._client_factory()
        current = self._arms
        new: dict[str, LoadedModel] = {}
        changed: list[str] = []
        failures: list[str] = []
        kept: dict[str, str] = {}  # arm -> why it keeps its last good model
        for alias, version in self._wanted(client).items():
            old = current.get(alias)
            if version is None:
                if old is not None and alias == CHAMPION:
                    new[alias] = old
                    kept[alias] = (
                        f"@{alias} of {self.model_name} names no version (alias removed or "
                        f"its version deleted): serving the last good v{old.version}"
                    )
                elif old is not None:
                    changed.append(alias)
                continue
            if old is not None and old.version == version:
                new[alias] = old
                continue
            try:
                new[alias] = self._load(client, version, alias)
            except Exception as error:  # refused, or broken: never worse than the last good
                failures.append(_failure(self.model_name, version, alias, error))
                if old is not None:
                    new[alias] = old
                    kept[alias] = f"{failures[-1]}: serving the last good v{old.version}"
                continue
            changed.append(alias)
        self._note_kept(kept)
        if changed:
            self._arms = new  # the atomic swap: one reference assignment
            for alias in changed:
                log.info("serving %s: %s", alias, new[alias].version if alias in new else "none")
                if self._on_swap is not None:
                    self._on_swap(alias, current.get(alias), new.get(alias))
        if failures:
            raise ModelRefused("; ".join(failures))
        return changed

    def _wanted(self, client: MlflowClient) -> dict[str, str | None]:
        """Arm -> the version it should serve (None: no such alias, or not pinned)."""
        if self.pinned is not None:
            return {alias: self.pinned.get(alias) for alias in ARMS}
        wanted: dict[str, str | None] = {}
        for alias in ARMS:
            mv = alias_version(client, self.model_name, alias)
            wanted[alias] = None if mv is None else str(mv.version)
        return wanted

    def _load(self, client: MlflowClient, version: str, alias: str) -> LoadedModel:
        return load_version(
            client,
            self.model_name,
            version,
            alias,
            self.cache_dir,
            feature_service=self.feature_service,
        )

    def _note_kept(self, kept: dict[str, str]) -> None:
        # Logged when it changes, not at every poll: /readyz shows it for as long as it lasts.
        for alias, reason in kept.items():
            if self.kept.get(alias) != reason:
                log.warning("keeping the last good model for %s: %s", alias, reason)
        self.kept = kept

    def choose(self, user_id: int) -> tuple[str, LoadedModel] | None:
        """The arm and model for ``user_id``: challenger for the canary share, else champion."""
        arms = self._arms  # one read: both lookups see the same mapping
        challenger = arms.get(CHALLENGER)
        if challenger is not None and canary_bucket(user_id) < self.canary_share:
            return CHALLENGER, challenger
        champion = arms.get(CHAMPION)
        return None if champion is None else (CHAMPION, champion)

    # ----------------------------------------------------------------------- background
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name="rankflow-alias-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
                self.last_error = None
            except Exception as error:  # a registry hiccup must not kill the poller
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning("alias refresh failed (keeping the current models): %s", error)
