"""WordNet for NLTK, offline: find a WordNet 3.0 database and load it without touching the network.

The LRS-VQA scorer (``VisionXLab/LRS-VQA``, ``Script/evaluation_LRSVQA.py``) accepts an answer as
correct when some synset of the ground truth and some synset of the answer have an NLTK
``path_similarity`` above 0.8. That needs NLTK's WordNet corpus, which NLTK normally downloads.
This module never downloads anything. It looks, in this order, for:

1. an ``nltk_data`` folder given explicitly or through ``$RSVL_NLTK_DATA`` (it must hold
   ``corpora/wordnet`` — e.g. NLTK's own ``wordnet.zip`` unpacked there);
2. a WordNet corpus already in NLTK's usual search path (``nltk.data.find("corpora/wordnet")``,
   which only searches local folders);
3. a WordNet 3.0 *database* installed by the system — Debian/Ubuntu ``apt-get install
   wordnet-base`` puts it in ``/usr/share/wordnet``; ``$WNSEARCHDIR`` or ``$WNHOME/dict`` point
   elsewhere. Those files are copied (NLTK's path sandbox refuses symlinks and hard links that
   leave its data folders) into ``<cache>/corpora/wordnet`` where ``<cache>`` is
   ``$RSVL_CACHE/nltk_data`` or ``~/.cache/rsvl/nltk_data``. The Debian package lacks the
   ``lexnames`` file NLTK reads first; it is written from the table in the ``lexnames(5WN)``
   manual page. The folder is assembled under a temporary name and renamed into place, so a
   crash or a concurrent process never leaves a half-built corpus.

When none is found, :func:`load_wordnet` raises :class:`WordNetUnavailableError` saying how to
install one. The corpus is loaded with a small subclass of NLTK's ``WordNetCorpusReader`` that
skips the WordNet-version mapping NLTK builds for its multilingual (OMW) data: that mapping
needs ``index.sense`` (absent from ``wordnet-base``; ``apt-get install wordnet-sense-index`` adds
it, and it is copied when present) and is the identity for WordNet 3.0 anyway. Similarity,
synsets and morphology do not use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

from rsvl.errors import InputError

__all__ = [
    "LEXNAMES",
    "WordNetUnavailableError",
    "build_nltk_wordnet",
    "find_wordnet_database",
    "load_wordnet",
    "nltk_cache_dir",
]

logger = logging.getLogger(__name__)

#: The 45 WordNet 3.0 lexicographer files, numbered 00-44 in this order (``lexnames(5WN)``).
LEXNAMES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
#: Syntactic category numbers of ``lexnames``' third column.
_LEX_POS = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

#: Database files NLTK's reader opens; all must be present.
_REQUIRED = tuple(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")) + tuple(
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")
)
#: Copied when the database has them (sense counts, sense keys).
_OPTIONAL = ("cntlist.rev", "index.sense")
_MARKER = "rsvl-wordnet.json"

#: Where system packages put the WordNet 3.0 database (Debian/Ubuntu, Princeton's installer).
_SYSTEM_DIRS = ("/usr/share/wordnet", "/usr/local/WordNet-3.0/dict", "/usr/share/WordNet-3.0/dict")

_INSTALL_HELP = (
    "install the WordNet 3.0 database (Debian/Ubuntu: `apt-get install wordnet-base`), or point "
    "$RSVL_NLTK_DATA at an nltk_data folder that holds corpora/wordnet (NLTK's wordnet.zip unpacked), "
    "or set $WNSEARCHDIR to a WordNet 3.0 dict folder"
)


class WordNetUnavailableError(InputError):
    """No WordNet 3.0 could be found offline (the message says how to install one)."""


def nltk_cache_dir() -> Path:
    """The project-controlled ``nltk_data`` folder: ``$RSVL_CACHE/nltk_data`` or ``~/.cache/rsvl/nltk_data``."""
    base = os.environ.get("RSVL_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "rsvl"
    return root / "nltk_data"


def _is_database(directory: Path) -> bool:
    return all((directory / name).is_file() for name in _REQUIRED)


def find_wordnet_database() -> Path | None:
    """The first folder holding the WordNet database files: ``$WNSEARCHDIR``, ``$WNHOME/dict``,
    then the system locations (``/usr/share/wordnet`` from Debian's ``wordnet-base``)."""
    candidates: list[Path] = []
    if os.environ.get("WNSEARCHDIR"):
        candidates.append(Path(os.environ["WNSEARCHDIR"]).expanduser())
    if os.environ.get("WNHOME"):
        candidates.append(Path(os.environ["WNHOME"]).expanduser() / "dict")
    candidates.extend(Path(p) for p in _SYSTEM_DIRS)
    for candidate in candidates:
        if _is_database(candidate):
            return candidate
    return None


def _lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_LEX_POS[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def _source_signature(database: Path) -> dict[str, Any]:
    files = {}
    for name in (*_REQUIRED, *_OPTIONAL, "lexnames"):
        path = database / name
        if path.is_file():
            st = path.stat()
            files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"source": str(database.resolve()), "files": files}


def _read_marker(corpus: Path) -> dict[str, Any] | None:
    try:
        return json.loads((corpus / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _corpus_is_complete(corpus: Path, signature: dict[str, Any]) -> bool:
    marker = _read_marker(corpus)
    if marker is None or marker.get("source_signature") != signature:
        return False
    copied = marker.get("copied", {})
    names = (*_REQUIRED, "lexnames")
    return all((corpus / n).is_file() and (corpus / n).stat().st_size == copied.get(n) for n in names)


def build_nltk_wordnet(
    database: str | PathLike[str] | None = None, cache_dir: str | PathLike[str] | None = None
) -> Path:
    """Assemble ``<cache_dir>/corpora/wordnet`` from a WordNet 3.0 database folder; return ``cache_dir``.

    Files are copied (not linked) and ``lexnames`` is written when the database lacks it. The
    corpus is built in a temporary folder beside the target and renamed into place; an existing
    corpus built from the same unchanged database is reused as is.

    Args:
        database: the folder with ``data.noun``, ``index.noun``... (default: :func:`find_wordnet_database`).
        cache_dir: the ``nltk_data`` folder to fill (default: :func:`nltk_cache_dir`).
    """
    source = Path(database) if database is not None else find_wordnet_database()
    if source is None or not _is_database(source):
        where = f" in {source}" if source is not None else ""
        raise WordNetUnavailableError(f"no WordNet database found{where}; {_INSTALL_HELP}")
    root = Path(cache_dir) if cache_dir is not None else nltk_cache_dir()
    corpora = root / "corpora"
    target = corpora / "wordnet"
    signature = _source_signature(source)
    if _corpus_is_complete(target, signature):
        return root
    corpora.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=corpora))
    try:
        copied: dict[str, int] = {}
        for name in (*_REQUIRED, *_OPTIONAL, "lexnames"):
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
                copied[name] = (tmp / name).stat().st_size
        if "lexnames" not in copied:
            (tmp / "lexnames").write_text(_lexnames_text(), encoding="ascii")
            copied["lexnames"] = (tmp / "lexnames").stat().st_size
        marker = {
            "source_signature": signature,
            "copied": copied,
            "lexnames_written": "lexnames" not in signature["files"],
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if target.exists():
            # A stale or incomplete corpus: move it aside first (rename is atomic), then drop it.
            stale = Path(tempfile.mkdtemp(prefix=".wordnet-stale-", dir=corpora))
            with contextlib.suppress(FileNotFoundError):  # another process removed it meanwhile
                os.replace(target, stale / "wordnet")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process renamed its copy into place first: keep that one if it is complete.
            if not _corpus_is_complete(target, signature):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built the NLTK WordNet corpus in %s from %s", target, source)
    return root


_READERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _reader_class() -> type:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _OfflineWordNetReader(WordNetCorpusReader):
        """NLTK's reader minus the WordNet-version mapping (OMW only; identity for WordNet 3.0)."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return _OfflineWordNetReader


def _allow_in_nltk_sandbox(nltk_data: Path) -> None:
    """NLTK (3.9+) refuses to read corpora outside ``nltk.data.path``: add this folder to it."""
    import nltk.data

    entry = str(nltk_data)
    if entry not in nltk.data.path:
        nltk.data.path.append(entry)


def _nltk_search_path_corpus() -> Path | None:
    """A WordNet corpus folder already in NLTK's own (local) search path, if any."""
    import nltk.data

    try:
        found = nltk.data.find("corpora/wordnet")
    except LookupError:
        return None
    path = Path(str(getattr(found, "path", found)))
    return path if path.is_dir() and _is_database(path) and (path / "lexnames").is_file() else None


def _resolve_corpus(nltk_data: str | PathLike[str] | None) -> tuple[Path, str]:
    explicit = nltk_data if nltk_data is not None else os.environ.get("RSVL_NLTK_DATA") or None
    if explicit is not None:
        corpus = Path(explicit).expanduser() / "corpora" / "wordnet"
        if not (_is_database(corpus) and (corpus / "lexnames").is_file()):
            raise WordNetUnavailableError(
                f"{corpus} is not an NLTK WordNet corpus (it needs lexnames, index.* and data.* files); {_INSTALL_HELP}"
            )
        return corpus, "nltk_data folder given by the user"
    found = _nltk_search_path_corpus()
    if found is not None:
        return found, "NLTK's own WordNet corpus (nltk.data.path)"
    database = find_wordnet_database()
    if database is None:
        raise WordNetUnavailableError(f"WordNet is not available offline; {_INSTALL_HELP}")
    return build_nltk_wordnet(database) / "corpora" / "wordnet", f"system WordNet database {database}"


def load_wordnet(nltk_data: str | PathLike[str] | None = None) -> Any:
    """NLTK's WordNet reader on a local corpus (see the module docstring for the search order).

    Loading takes about a second; readers are cached per corpus folder. Never downloads.

    Args:
        nltk_data: an ``nltk_data`` folder holding ``corpora/wordnet``; default ``$RSVL_NLTK_DATA``,
            then NLTK's search path, then the system database copied into :func:`nltk_cache_dir`.

    Raises:
        WordNetUnavailableError: when no WordNet is found (the message says how to install one),
            or the corpus is not WordNet 3.0.
    """
    try:
        import nltk  # noqa: F401
    except ImportError:
        raise WordNetUnavailableError("the WordNet rule needs NLTK: `pip install nltk`") from None
    corpus, origin = _resolve_corpus(nltk_data)
    key = str(corpus.resolve())
    with _LOCK:
        reader = _READERS.get(key)
        if reader is None:
            _allow_in_nltk_sandbox(corpus.parent.parent)
            with warnings.catch_warnings():
                # "The multilingual functions are not available": expected, OMW is not used.
                warnings.simplefilter("ignore", UserWarning)
                reader = _reader_class()(key, None)
            version = reader.get_version()
            if version != "3.0":
                raise WordNetUnavailableError(
                    f"{corpus} holds WordNet {version}, expected WordNet 3.0; {_INSTALL_HELP}"
                )
            reader.rsvl_origin = origin
            _READERS[key] = reader
            logger.debug("loaded WordNet %s from %s (%s)", version, corpus, origin)
    return reader
