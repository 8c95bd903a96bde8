"""Shared numpydoc parameter snippets, and signal methods generated from functions.

As HyperSpy does in ``hyperspy/docstrings/``, a parameter used by several
functions is described once here and inserted into each docstring with
:func:`fill`; the signal methods are generated from the functions by
:func:`as_method`, so their signatures and docstrings never drift.
"""

from __future__ import annotations

import functools
import inspect
import re
import textwrap

__all__ = ["SNIPPETS", "fill", "fill_doc", "as_method"]

SNIPPETS = {
    "signal_in": """signal : hyperspy.signals.Signal2D
        The input frames, lazy or not, any navigation shape; never modified
        (unless ``inplace``).""",
    "navigation_chunks": """navigation_chunks : int, optional
        Frames per dask block (HyperSpy's navigation chunks): the unit of work
        of a worker and of the progress bar. Default for networks: about 8
        frames of 512x512 (at most 16, at least one network batch); otherwise
        about 16 frames of 512x512 (at most 32; one frame at least).""",
    "network_batch_size": """network_batch_size : int, optional
        Frames (or tiles) per network call: 2 (completion) or 4 (denoising) on
        the CPU, 16 on a GPU. Bounds the network's memory whatever the block.""",
    "device": """device : str, optional
        Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); default:
        CUDA, then MPS, then the CPU. Checked before anything is computed.""",
    "precision": """precision : {None, "float32", "bfloat16", "float16"}, optional
        Reduced-precision inference (GPU; bfloat16 also runs on the CPU).
        Checked before anything is computed.""",
    "inplace": """inplace : bool
        Replace the signal's data (and title and metadata) and return None; the
        signal is only modified once the result is computed (or, for a lazy
        signal, once the input has been checked). Cannot change laziness:
        leave ``lazy_output`` unset or equal to the input's.""",
    "lazy_output": """lazy_output : bool, optional
        Return a lazy signal; default: as the input.""",
    "path_shape_coverage": """shape : tuple of int
        Frame shape (rows, columns).
    coverage : float
        Requested fraction of sampled pixels.""",
    "show_progressbar": """show_progressbar : bool, optional
        Progress bar while computing; default: HyperSpy's preference.""",
    "model": """model : str or pathlib.Path or Model, optional
        Trained model: a name from :func:`hyperspy_partialscan.models.list_models`,
        a path, or a loaded Model; default: the shipped default model for the
        task. Only used by ``method="generator"`` (an error otherwise).""",
    "seed": """seed : int, optional
        Random seed in [0, 2**63); the same seed gives the same result.""",
}


def fill(doc: str, **extra) -> str:
    """Insert the :data:`SNIPPETS` (and ``extra`` values) into a docstring's ``{name}`` fields.

    Other braces must be doubled (``{{`` and ``}}``). ``extra`` gives values
    of module constants (e.g. a default tile size), so the docstring never
    repeats a literal that could drift.

    Examples
    --------
    >>> from hyperspy_partialscan._docstrings import fill
    >>> print(fill('''Parameters
    ...     ----------
    ...     {show_progressbar}'''))
    Parameters
        ----------
        show_progressbar : bool, optional
            Progress bar while computing; default: HyperSpy's preference.
    """
    return doc.format(**{**SNIPPETS, **extra})


def fill_doc(func=None, /, **extra):
    """Decorator: fill ``func``'s docstring with :func:`fill` (``@fill_doc`` or ``@fill_doc(NAME=value)``).

    Examples
    --------
    >>> from hyperspy_partialscan._docstrings import fill_doc
    >>> @fill_doc(TILE=512)
    ... def f(tile=512):
    ...     '''Tile side, default {TILE}; a set: {{1}}.'''
    >>> f.__doc__
    'Tile side, default 512; a set: {1}.'
    """

    def apply(f):
        if f.__doc__:
            f.__doc__ = fill(f.__doc__, **extra)
        return f

    return apply if func is None else apply(func)


_SIGNAL_PARAM = re.compile(r"\n    signal : [^\n]*\n(?:        [^\n]*\n|\n(?=        ))*")


def as_method(func):
    """A signal method calling ``func(self, ...)``, with ``func``'s signature and docstring less ``signal``.

    Examples
    --------
    >>> from hyperspy_partialscan._docstrings import as_method
    >>> def scale(signal, factor=2.0):
    ...     '''Multiply.
    ...
    ...     Parameters
    ...     ----------
    ...     signal : Signal
    ...         The input.
    ...     factor : float
    ...     '''
    ...     return signal * factor
    >>> m = as_method(scale)
    >>> import inspect; str(inspect.signature(m))
    '(self, factor=2.0)'
    >>> "signal :" in m.__doc__, m(3, factor=2)
    (False, 6)
    """

    @functools.wraps(func)
    def method(self, *args, **kwargs):
        return func(self, *args, **kwargs)

    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    method.__signature__ = sig.replace(parameters=[params[0].replace(name="self")] + params[1:])
    doc = inspect.getdoc(func) or ""
    doc = "\n" + textwrap.indent(doc, "    ")
    method.__doc__ = textwrap.dedent(_SIGNAL_PARAM.sub("\n", doc, count=1)).strip() + "\n"
    del method.__wrapped__  # inspect must use __signature__, not the function's
    return method
