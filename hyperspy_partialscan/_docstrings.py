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

__all__ = ["SNIPPETS", "fill", "as_method"]

SNIPPETS = {
    "signal_in": """signal : hyperspy.signals.Signal2D
        The input frames, lazy or not, any navigation shape; never modified
        (unless ``inplace``).""",
    "navigation_chunks": """navigation_chunks : int, optional
        Frames per dask block (HyperSpy's navigation chunks): the unit of work
        of a worker and of the progress bar. Default: about 8 frames of 512x512
        for networks (at least one network batch), 16 for classical methods.""",
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
        signal, once the input has been checked).""",
    "lazy_output": """lazy_output : bool, optional
        Return a lazy signal; default: as the input. Cannot differ from the
        input with ``inplace``.""",
    "show_progressbar": """show_progressbar : bool, optional
        Progress bar while computing; default: HyperSpy's preference.""",
}


def fill(doc: str) -> str:
    """Insert the :data:`SNIPPETS` into a docstring's ``{name}`` fields (other braces must be doubled).

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
    return doc.format(**SNIPPETS)


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
