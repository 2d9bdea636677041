"""Old import paths that keep working after a module moved, as SpeechBrain keeps its own
(``speechbrain.utils.importutils.deprecated_redirect``), with a ``DeprecationWarning`` on first
use. SpeechBrain's redirect maps one module to one module; a module of this package that was
split, or whose names changed because they clashed (``s3brain.salad.TokenDropping`` is now
``s3brain.strategies.token_dropping.TokenDropper``), also needs a table of names, so the
redirect here is a module whose attributes are looked up in that table first.

Example
-------
>>> import sys, warnings
>>> redirect("s3brain._example_old", "s3brain.utils.results",
...          {"KEYS": "s3brain.utils.results:RESULT_KEYS"})
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     from s3brain._example_old import KEYS
>>> KEYS[0], caught[0].category.__name__
('strategy', 'DeprecationWarning')
>>> del sys.modules["s3brain._example_old"]
"""

import importlib
import importlib.util
import sys
import types
import warnings


class RedirectedModule(types.ModuleType):
    """A module that moved: attributes are fetched from where they live now.

    Arguments
    ---------
    old : str
        The old dotted path.
    new : str
        The module most of its names went to.
    names : dict, optional
        ``{old name: "new.module"}`` or ``{old name: "new.module:new_name"}`` for the names that
        went elsewhere or were renamed.
    """

    def __init__(self, old, new, names=None):
        super().__init__(old, f"Moved to {new}.")
        self.__path__ = []  # so ``old.sub`` lookups fail with an ImportError, not a crash
        self._new, self._names, self._warned = new, dict(names or {}), False

    def _target(self, name):
        where = self._names.get(name, self._new)
        module, _, attr = where.partition(":")
        return module, attr or name

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        module, attr = self._target(name)
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.__name__} moved to {self._new}: import from there (this path "
                          f"will be removed)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)

    @property
    def __spec__(self):
        """A spec of the old name over the new module's file, so that ``python -m <old
        path>`` runs the new module."""
        return importlib.util.spec_from_file_location(
            self.__name__, importlib.util.find_spec(self._new).origin)

    @__spec__.setter
    def __spec__(self, value):
        """Ignored: the spec is always the new module's."""

    def __dir__(self):
        return sorted(set(dir(importlib.import_module(self._new))) | set(self._names))


def redirect(old, new, names=None):
    """Make ``old`` importable again, its names looked up in ``new`` (or as ``names`` says).

    Arguments
    ---------
    old : str
        The old dotted path (a module that no longer exists).
    new : str
        The module most of its names went to.
    names : dict, optional
        See ``RedirectedModule``.
    """
    module = RedirectedModule(old, new, names)
    sys.modules[old] = module
    parent, _, leaf = old.rpartition(".")
    if parent in sys.modules and not hasattr(sys.modules[parent], leaf):
        setattr(sys.modules[parent], leaf, module)
