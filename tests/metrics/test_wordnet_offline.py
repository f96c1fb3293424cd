"""WordNet for NLTK from the system database: built atomically into a cache, loaded without network."""

from __future__ import annotations

import gzip
import json
import re
import socket
from pathlib import Path

import pytest

from rsvl.metrics import wordnet as wnm


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection (an NLTK download) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    import nltk

    monkeypatch.setattr(nltk, "download", refuse)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("nltk_data")
    assert wnm.find_wordnet_database() is not None, "WordNet database missing: apt-get install wordnet-base"
    return wnm.build_nltk_wordnet(cache_dir=root)


def test_path_similarity_dog_cat(cache):
    wn = wnm.load_wordnet(cache)
    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").path_similarity(wn.synset("cat.n.01")) == 0.2
    assert wnm.load_wordnet(cache) is wn  # cached reader


def test_lexnames_file(cache):
    lines = (cache / "corpora" / "wordnet" / "lexnames").read_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1" and lines[44] == "44\tadj.ppl\t3"
    assert all(re.fullmatch(r"\d\d\t[a-zA-Z]+\.[a-zA-Z]+\t[1-4]", line) for line in lines)
    man = Path("/usr/share/man/man5/lexnames.5WN.gz")
    if man.exists():  # the table of the lexnames(5WN) manual page, when the image keeps man pages
        with gzip.open(man, "rt") as handle:
            table = re.findall(r"^(\d\d)\t(\S+) *\t", handle.read(), flags=re.MULTILINE)
        assert [(f"{i:02d}", n) for i, n in enumerate(wnm.LEXNAMES)] == table


def test_reuse_and_rebuild(cache):
    corpus = cache / "corpora" / "wordnet"
    before = (corpus / "data.noun").stat().st_mtime_ns
    assert wnm.build_nltk_wordnet(cache_dir=cache) == cache
    assert (corpus / "data.noun").stat().st_mtime_ns == before  # complete corpus reused
    (corpus / "data.noun").write_bytes(b"truncated")
    wnm.build_nltk_wordnet(cache_dir=cache)
    assert (corpus / "data.noun").stat().st_size > 1_000_000  # incomplete corpus replaced
    assert not [p for p in corpus.parent.iterdir() if p.name.startswith(".wordnet")]  # no temp folders left
    marker = json.loads((corpus / "rsvl-wordnet.json").read_text())
    assert marker["lexnames_written"] == (not (wnm.find_wordnet_database() / "lexnames").exists())


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RSVL_CACHE", str(tmp_path))
    assert wnm.nltk_cache_dir() == tmp_path / "nltk_data"


def test_unavailable_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("RSVL_NLTK_DATA", str(tmp_path))
    with pytest.raises(wnm.WordNetUnavailableError, match=r"not an NLTK WordNet corpus.*apt-get install wordnet-base"):
        wnm.load_wordnet()
    monkeypatch.delenv("RSVL_NLTK_DATA")
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.delenv("WNHOME", raising=False)
    monkeypatch.setattr(wnm, "_SYSTEM_DIRS", ())
    monkeypatch.setattr(wnm, "_nltk_search_path_corpus", lambda: None)
    assert wnm.find_wordnet_database() is None
    with pytest.raises(wnm.WordNetUnavailableError, match="not available offline"):
        wnm.load_wordnet()
    with pytest.raises(wnm.WordNetUnavailableError, match="no WordNet database found"):
        wnm.build_nltk_wordnet(cache_dir=tmp_path)


def test_wnsearchdir_database(monkeypatch, tmp_path, cache):
    monkeypatch.setenv("WNSEARCHDIR", str(cache / "corpora" / "wordnet"))
    assert wnm.find_wordnet_database() == cache / "corpora" / "wordnet"
