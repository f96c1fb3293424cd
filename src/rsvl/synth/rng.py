"""Seeds and counter-based hashing: the two sources of randomness in SynthRS.

* :func:`derive_seed` / :func:`rng_for` turn a tuple of keys (dataset seed, image index, a purpose
  such as ``"layout"``) into an independent generator. Every image's randomness depends only on
  ``(seed, index)``, never on how many images were drawn before it, so images can be generated in
  any order, in parallel, or resumed half-way, and come out identical.
* :func:`hash_unit` is a stateless hash of integer coordinates. Textures are built from it, so the
  colour of pixel ``(x, y)`` is a pure function of the seed and ``(x, y)``: a large image rendered
  tile by tile is seamless, and a window renders the same pixels as the whole image.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["derive_seed", "hash_u64", "hash_unit", "rng_for"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_PRIMES = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
    np.uint64(0xD6E8FEB86659FD93),
)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed that depends only on ``keys`` (stable across runs, platforms and Python versions)."""
    text = "\x1f".join(str(k) for k in keys).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def rng_for(*keys: int | str) -> np.random.Generator:
    """An independent numpy generator seeded by :func:`derive_seed` of ``keys``."""
    return np.random.default_rng(derive_seed(*keys))


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective avalanche of 64-bit words (wraps modulo 2**64)."""
    with np.errstate(over="ignore"):  # wrapping is the point (0-d arrays warn where arrays do not)
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def hash_u64(seed: int, *coords: np.ndarray | int) -> np.ndarray:
    """Hash integer coordinate arrays (broadcast together) with ``seed`` into uint64 words."""
    if len(coords) > len(_PRIMES):
        raise ValueError(f"hash_u64 takes at most {len(_PRIMES)} coordinate arrays")
    arrays = [np.asarray(c).astype(np.int64).astype(np.uint64) for c in coords]
    shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
    h = np.full(shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    h = _mix(h)
    for prime, a in zip(_PRIMES, arrays, strict=False):
        with np.errstate(over="ignore"):
            h = _mix(h ^ (a * prime))
    return h


def hash_unit(seed: int, *coords: np.ndarray | int) -> np.ndarray:
    """Hash integer coordinates to float32 values uniform in ``[0, 1)``."""
    h = hash_u64(seed, *coords)
    return ((h >> _S40).astype(np.float32) * np.float32(1.0 / (1 << 24))).astype(np.float32)
