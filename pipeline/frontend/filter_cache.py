"""An on-disk cache of the front end's filter banks, so that a new process does not rebuild them.

Building the filters of a front end takes seconds; reading them back takes a fraction of that. :func:`cached`
returns the object a ``build`` function makes, stored under a key in one file per key:

- The file name is the SHA-256 of the key (canonical JSON) together with :data:`FILTER_CACHE_VERSION`, the
  versions of scatterbird and of the libraries the filters are computed with (torch, numpy, scipy, kymatio),
  and a digest of the front end's source files: a checkout whose filter code was edited never reads filters
  built by the code before the edit.
- Files are written whole or not at all (a temporary file in the same folder, then ``os.replace``), so that
  processes sharing a folder never see half a file; two writing at once both write valid files.
- A file is read with ``torch.load(weights_only=True)``: it runs no code. It holds the key it was written
  for, compared on every read. Anything wrong with a file (truncated, garbage, another key or version, a
  class not allowed) makes it rebuilt and replaced, never trusted.
- A folder that cannot be written (read-only, full) costs a rebuild in every process and one warning per
  process, never an error.

Objects are stored as plain containers by :func:`encode` and rebuilt by :func:`decode`. Only classes
registered with :func:`register` are written or rebuilt; the filter classes of ``bands.py`` are registered
here, and a module defining more (``thresholding.py``: its rule bank; ``scattering.py``: its bank and plan
dataclasses) registers them itself, since this module must not import them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from scatterbird.data import user_cache_dir
from scatterbird.errors import ScatterbirdError
from scatterbird.pipeline.frontend.bands import Band, FilterGroup
from scatterbird.version import __version__

#: Bump when the stored structures change (the classes' fields, or this module's encoding).
FILTER_CACHE_VERSION = 1

#: Environment variable naming the cache folder; ``""`` or ``"off"`` turns the cache off.
ENV_VAR = "SCATTERBIRD_FILTER_CACHE"

_FORMAT = "scatterbird-filter-cache"
#: Libraries whose versions can change the filters' numbers (besides scatterbird itself).
_LIBRARIES = ("torch", "numpy", "scipy", "kymatio")

T = TypeVar("T")


class FilterCacheError(ScatterbirdError, ValueError):
    """A cache file, or an object given to :func:`decode`, cannot be turned back into filters."""


class FilterCacheWarning(UserWarning):
    """The filter cache folder cannot be written: filters are rebuilt in every process."""


# -- the allowlist ---------------------------------------------------------------------------------
_REGISTRY: dict[str, type] = {}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(*classes: type) -> None:
    """Allow instances of ``classes`` in :func:`encode` and :func:`decode`.

    An instance is stored as its ``__dict__`` and rebuilt with ``cls.__new__(cls)`` and that ``__dict__``:
    no ``__init__`` or ``__post_init__`` runs, so a class whose state is not its ``__dict__`` (``__slots__``)
    cannot be registered.
    """
    for cls in classes:
        if not isinstance(cls, type):
            raise TypeError(f"register takes classes, got {cls!r}")
        if "__dict__" not in dir(cls):
            raise TypeError(f"{_name(cls)} keeps its state in __slots__, not in a __dict__")
        _REGISTRY[_name(cls)] = cls


register(Band, FilterGroup)


# -- encoding --------------------------------------------------------------------------------------
# Lists, tuples, tensors and plain scalars are stored as they are (the weights-only unpickler keeps them
# exactly); everything else becomes a dict with one tag, so that every dict of the stored tree is a tag:
#   {"dict": [[k, v], ...]}  {"odict": [[k, v], ...]}  {"set": [...]}  {"frozenset": [...]}
#   {"ndarray": tensor, "dtype": str}  {"npscalar": 0-d tensor, "dtype": str}  {"complex": [re, im]}
#   {"torch_dtype": str}  {"device": str}  {"obj": class name, "id": n, "state": {"dict": ...}}  {"ref": n}
_PLAIN = (type(None), bool, int, float, str)


def encode(obj: Any) -> Any:
    """``obj`` as plain containers that ``torch.save`` writes and ``torch.load(weights_only=True)`` reads.

    Parameters
    ----------
    obj : object
        Tensors, numpy arrays and scalars, Python scalars, lists, tuples, dicts (any hashable keys), sets,
        and instances of registered classes (see :func:`register`), nested. An instance met twice is stored
        once and comes back as one object.

    Raises
    ------
    TypeError
        For an object of another type, or of a class that is not registered.
    """
    return _Encoder().encode(obj)


class _Encoder:
    def __init__(self) -> None:
        self.ids: dict[int, int] = {}  # id() of each instance met -> its number (all stay alive: obj holds them)

    def encode(self, o: Any) -> Any:
        t = type(o)
        if t in _PLAIN:
            return o
        if isinstance(o, torch.Tensor):
            return o.detach()
        if t is list:
            return [self.encode(v) for v in o]
        if t is tuple:
            return tuple(self.encode(v) for v in o)
        if t is dict or t is OrderedDict:
            tag = "dict" if t is dict else "odict"
            return {tag: [[self.encode(k), self.encode(v)] for k, v in o.items()]}
        if t is set or t is frozenset:
            return {t.__name__: [self.encode(v) for v in o]}
        if t is np.ndarray:
            return {"ndarray": _tensor_of(o), "dtype": o.dtype.str}
        if isinstance(o, np.generic):
            return {"npscalar": _tensor_of(np.asarray(o)), "dtype": o.dtype.str}
        if t is complex:
            return {"complex": [o.real, o.imag]}
        if t is torch.dtype:
            return {"torch_dtype": str(o).removeprefix("torch.")}
        if t is torch.device:
            return {"device": str(o)}
        name = _name(t)
        if _REGISTRY.get(name) is not t:
            raise TypeError(
                f"cannot store a {name} in the filter cache: not a plain type and not registered "
                "(filter_cache.register)"
            )
        if id(o) in self.ids:
            return {"ref": self.ids[id(o)]}
        self.ids[id(o)] = n = len(self.ids)
        return {"obj": name, "id": n, "state": self.encode(dict(vars(o)))}


def _tensor_of(a: np.ndarray) -> torch.Tensor:
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    try:
        # a C-contiguous copy: its own storage (not the array's), and 0-d arrays stay 0-d
        return torch.from_numpy(a.copy(order="C"))
    except TypeError as e:
        raise TypeError(f"cannot store a numpy array of dtype {a.dtype} in the filter cache") from e


def decode(data: Any) -> Any:
    """Rebuild the object :func:`encode` made ``data`` from.

    Raises
    ------
    FilterCacheError
        Where ``data`` is not what :func:`encode` makes: an unknown tag, a class that is not registered, a
        reference to an object not yet seen.
    """
    try:
        return _Decoder().decode(data)
    except FilterCacheError:
        raise
    except Exception as e:  # anything malformed: a wrong shape of tag, a bad dtype, an unhashable key
        raise FilterCacheError(f"not an encoded filter object: {type(e).__name__}: {e}") from e


class _Decoder:
    def __init__(self) -> None:
        self.objects: dict[int, Any] = {}

    def decode(self, d: Any) -> Any:
        t = type(d)
        if t in _PLAIN or isinstance(d, torch.Tensor):
            return d
        if t is list:
            return [self.decode(v) for v in d]
        if t is tuple:
            return tuple(self.decode(v) for v in d)
        if t is not dict or len(d) == 0:
            raise FilterCacheError(f"unexpected {t.__name__} in an encoded filter object")
        if "dict" in d or "odict" in d:
            pairs = ((self.decode(k), self.decode(v)) for k, v in d.get("dict", d.get("odict")))
            return dict(pairs) if "dict" in d else OrderedDict(pairs)
        if "set" in d:
            return {self.decode(v) for v in d["set"]}
        if "frozenset" in d:
            return frozenset(self.decode(v) for v in d["frozenset"])
        if "ndarray" in d:
            return d["ndarray"].numpy().astype(np.dtype(d["dtype"]), copy=False)
        if "npscalar" in d:
            return d["npscalar"].numpy().astype(np.dtype(d["dtype"]), copy=False)[()]
        if "complex" in d:
            re, im = d["complex"]
            return complex(re, im)
        if "torch_dtype" in d:
            dtype = getattr(torch, d["torch_dtype"], None)
            if not isinstance(dtype, torch.dtype):
                raise FilterCacheError(f"unknown torch dtype {d['torch_dtype']!r}")
            return dtype
        if "device" in d:
            return torch.device(d["device"])
        if "ref" in d:
            if d["ref"] not in self.objects:
                raise FilterCacheError(f"reference to object {d['ref']} before it is defined")
            return self.objects[d["ref"]]
        if "obj" in d:
            cls = _REGISTRY.get(d["obj"])
            if cls is None:
                raise FilterCacheError(
                    f"class {d['obj']} is not registered with the filter cache; refusing to build it"
                )
            o = cls.__new__(cls)
            self.objects[d["id"]] = o  # before its state: an object may refer back to itself
            state = self.decode(d["state"])
            if type(state) is not dict or not all(type(k) is str for k in state):
                raise FilterCacheError(f"the state of a {d['obj']} is not a dict of attribute names")
            o.__dict__.update(state)  # also for frozen dataclasses: no __setattr__ runs
            return o
        raise FilterCacheError(f"unknown tag {sorted(d)} in an encoded filter object")


# -- the cache -------------------------------------------------------------------------------------
def cache_root() -> Path | None:
    """The default cache folder: ``$SCATTERBIRD_FILTER_CACHE`` if set (``""`` or ``"off"``: no cache, None),
    else ``filters`` in scatterbird's user cache folder (``scatterbird.data.user_cache_dir``)."""
    value = os.environ.get(ENV_VAR)
    if value is None:
        return user_cache_dir() / "filters"
    if value.strip() == "" or value.strip().lower() == "off":
        return None
    return Path(value).expanduser()


def _library_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """SHA-256 of the front end's source files (this folder): changes with any edit of the code that builds
    filters, so that a checkout never reads filters its earlier code built under the same version."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(path.name.encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:  # unreadable source: the versions still tell releases apart
            pass
        h.update(b"\0")
    return h.hexdigest()


def _full_key(key: Mapping[str, Any]) -> str:
    """The canonical JSON of ``key`` with everything else a stored file depends on."""
    full = {
        "key": dict(key),
        "cache_version": FILTER_CACHE_VERSION,
        "scatterbird": __version__,
        "libraries": {name: _library_version(name) for name in _LIBRARIES},
        "source": _source_digest(),
    }
    return json.dumps(full, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def cache_file(key: Mapping[str, Any], root: Path | str) -> Path:
    """The file that holds ``key``'s object in the folder ``root``."""
    return Path(root) / f"{hashlib.sha256(_full_key(key).encode()).hexdigest()}.pt"


_warned = False  # one warning per process for a folder that cannot be written


def _warn_once(root: Path, err: BaseException) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"the filter cache folder {root} cannot be written ({err}); filters are built in every process. "
        f"Set {ENV_VAR} to a writable folder, or to 'off'.",
        FilterCacheWarning,
        stacklevel=3,
    )


def _load(path: Path, full_key: str) -> Any:
    """The object stored in ``path`` for ``full_key``; raises on a missing, damaged or foreign file."""
    with path.open("rb") as f:
        stored = torch.load(f, map_location="cpu", weights_only=True)
    if type(stored) is not dict or stored.get("format") != _FORMAT:
        raise FilterCacheError(f"{path} is not a filter cache file")
    if stored.get("version") != FILTER_CACHE_VERSION or stored.get("key") != full_key:
        raise FilterCacheError(f"{path} was written for another key or version")
    return decode(stored["data"])


def _store(path: Path, full_key: str, data: Any) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": _FORMAT, "version": FILTER_CACHE_VERSION, "key": full_key, "data": data}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached(
    key: Mapping[str, Any],
    build: Callable[[], T],
    *,
    root: Path | str | None | Literal["default"] = "default",
) -> T:
    """``build()``, read from the cache folder when an earlier call (in any process) stored it.

    Parameters
    ----------
    key : mapping
        Everything the built object depends on, as plain JSON values (the configuration, the grid, the
        buffer length, what is built). Equal keys must give equal objects.
    build : callable
        Makes the object on a miss; its result must be something :func:`encode` takes.
    root : Path, str, None or "default"
        The cache folder; ``"default"``: :func:`cache_root`; None: no cache (``build()`` every time).

    Returns
    -------
    object
        The stored object on a hit; else what ``build`` returned, which is also written to the folder.

    Raises
    ------
    TypeError, ValueError
        Where ``key`` is not JSON (``ValueError``: a NaN) or the built object holds a type :func:`encode`
        does not take.
    """
    if root == "default":
        root = cache_root()
    if root is None:
        return build()
    root = Path(root)
    full_key = _full_key(key)
    path = cache_file(key, root)
    try:
        return _load(path, full_key)
    except Exception:  # missing, damaged, foreign or unreadable: rebuilt and replaced, never trusted
        pass
    obj = build()
    data = encode(obj)  # outside the try: an object that cannot be stored is a bug to report, not to hide
    try:
        _store(path, full_key, data)
    except (OSError, RuntimeError) as e:  # torch's writer reports a failed write as a RuntimeError
        _warn_once(root, e)
    return obj
