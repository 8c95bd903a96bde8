"""Growing a trained network so that training continues from the function it already computes.

Each grower returns a copy of a network with new layers (inner or bottleneck
residual blocks, a non-local block, a Wiener input channel and output gate)
whose output weights start at zero, so the copy computes exactly what the
network computes and a fine-tune adds capacity instead of relearning.
:func:`interpolate_weights` mixes a network with its (possibly grown)
fine-tune (WiSE-FT).
"""

from __future__ import annotations

import torch

from .networks import DenoisingUNet, PartialScanGenerator

__all__ = ["deepen_inner", "add_attention", "deepen_bottleneck", "add_wiener", "interpolate_weights"]


def _grown(net, new_prefix, state=None, **changes):
    """``net``'s class built with its config updated by ``changes``, holding ``net``'s weights (or ``state``, its
    weights adapted to the change); only parameters under ``new_prefix`` may be new (they keep their own
    initialisation)."""
    grown = type(net)(**{**net.config, **changes})
    missing, unexpected = grown.load_state_dict(net.state_dict() if state is None else state, strict=False)
    if unexpected or not all(k.startswith(new_prefix) for k in missing):
        raise RuntimeError(f"growing {type(net).__name__}: unexpected parameters {unexpected or missing}")
    return grown


def _deepened(net, attribute, blocks):
    """``net`` grown to ``blocks`` residual blocks in its ``attribute`` sequence, the new ones starting as the identity
    (their second convolution zero), so the copy computes what ``net`` computes."""
    have = net.config.get(attribute, 0)
    if blocks < have:
        raise ValueError(f"{attribute} must be at least the network's {have}, got {blocks}")
    deep = _grown(net, f"{attribute}.", **{attribute: blocks})
    with torch.no_grad():
        for block in list(getattr(deep, attribute))[have:]:
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
    return deep


def interpolate_weights(start, end, fraction):
    """A copy of ``end`` whose weights lie ``fraction`` of the way from ``start``'s to ``end``'s.

    With ``start`` a trained network and ``end`` its fine-tune, this is WiSE-FT
    (Wortsman et al. 2022): a point between them often keeps most of what each
    does well. If ``end`` is a :class:`PartialScanGenerator` that grew a
    non-local block (:func:`add_attention`) or inner blocks
    (:func:`deepen_inner`), ``start`` is grown the same way: the grown layers'
    zero output weights stay zero, their other weights (which then do not
    change what ``start`` computes) are ``end``'s, so the grown parts add
    ``end``'s output scaled by ``fraction``. Other architectures must have
    the same configuration at both ends. Inputs are unchanged.

    Examples
    --------
    >>> from hyperspy_partialscan.models.growth import interpolate_weights
    >>> from hyperspy_partialscan.models.networks import PartialScanGenerator
    >>> a, b = PartialScanGenerator(width=4, inner_blocks=1), PartialScanGenerator(width=4, inner_blocks=1)
    >>> mid = interpolate_weights(a, b, 0.25)
    >>> bool(mid.trainer.weight.allclose(0.75 * a.trainer.weight + 0.25 * b.trainer.weight))
    True
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    grown = start
    if type(start) is PartialScanGenerator and type(end) is PartialScanGenerator:
        if start.config["inner_blocks"] < end.config["inner_blocks"]:
            grown = deepen_inner(grown, end.config["inner_blocks"])
        if end.config.get("attention_heads") and not start.config.get("attention_heads"):
            grown = add_attention(grown, end.config["attention_heads"])
    if type(grown) is not type(end) or grown.config != end.config:
        raise ValueError(f"interpolate_weights needs a network and its fine-tune (one architecture, or the fine-tune "
                         f"grown from it), got {type(start).__name__} {start.config} and {type(end).__name__} "
                         f"{end.config}")
    own, a, b = start.state_dict(), grown.state_dict(), end.state_dict()
    # grown layers: those the growers zeroed (a zero weight: the identity) stay zero, the others take end's weights
    zeroed = {k.rsplit(".", 1)[0] for k, v in a.items() if k not in own and k.endswith(".weight") and not v.any()}
    a = {k: v if k in own or k.rsplit(".", 1)[0] in zeroed else b[k] for k, v in a.items()}
    mixed = type(end)(**end.config)
    mixed.load_state_dict({k: torch.lerp(a[k], v, fraction) if v.is_floating_point() else v for k, v in b.items()})
    return mixed


def deepen_inner(net, inner_blocks):
    """A copy of a :class:`PartialScanGenerator` with ``inner_blocks`` inner residual blocks, computing the same.

    The new blocks are appended after the existing ones (dilations continue
    their cycle) with their second convolution zero, so each starts as the
    identity: training grows the network's large-scale context from the
    function it already computes instead of from scratch.

    Examples
    --------
    >>> import torch
    >>> from hyperspy_partialscan.models.growth import deepen_inner
    >>> from hyperspy_partialscan.models.networks import PartialScanGenerator
    >>> net = PartialScanGenerator(4, width=8, inner_blocks=2)
    >>> _ = torch.nn.init.normal_(net.out[-1].weight)  # a net that does not output its input
    >>> deep = deepen_inner(net, 4)
    >>> x = torch.randn(1, 4, 32, 32)
    >>> deep.config["inner_blocks"], bool(torch.allclose(deep(x), net(x), atol=1e-6))
    (4, True)
    """
    return _deepened(net, "inner_blocks", inner_blocks)


def add_attention(net, heads):
    """A copy of a :class:`DenoisingUNet` or :class:`PartialScanGenerator` with a :class:`NonLocalBlock` of ``heads``
    heads at its coarsest scale.

    The block starts as the identity, so the copy computes what ``net``
    computes and training adds non-local context to a trained network.

    Examples
    --------
    >>> import torch
    >>> from hyperspy_partialscan.models.growth import add_attention
    >>> from hyperspy_partialscan.models.networks import DenoisingUNet
    >>> net = DenoisingUNet(width=4)
    >>> _ = torch.nn.init.normal_(net.out.weight)  # a net that does not output its input
    >>> wide = add_attention(net, 2)
    >>> x = torch.randn(1, 2, 32, 32)
    >>> wide.config["attention_heads"], bool(torch.allclose(wide(x), net(x), atol=1e-6))
    (2, True)
    """
    if type(net) not in (DenoisingUNet, PartialScanGenerator):
        raise TypeError(f"add_attention takes a DenoisingUNet or a PartialScanGenerator, got {type(net).__name__}")
    if net.config.get("attention_heads", 0):
        raise ValueError(f"the network already has attention ({net.config['attention_heads']} heads)")
    return _grown(net, "attention.", attention_heads=heads)


def deepen_bottleneck(net, blocks):
    """A copy of a :class:`DenoisingUNet` with ``blocks`` residual blocks at its 1/8 scale, computing the same.

    The new blocks (dilations 1, 2, 4, ...; after the non-local block, if
    any) start as the identity, so training adds capacity and context where
    it is cheapest (a 3x3 convolution at 1/8 scale costs what one at full
    scale does) to the function a trained denoiser already computes.

    Examples
    --------
    >>> import torch
    >>> from hyperspy_partialscan.models.growth import deepen_bottleneck
    >>> from hyperspy_partialscan.models.networks import DenoisingUNet
    >>> net = DenoisingUNet(width=4)
    >>> _ = torch.nn.init.normal_(net.out.weight)  # a net that does not output its input
    >>> deep = deepen_bottleneck(net, 2)
    >>> x = torch.randn(1, 2, 32, 32)
    >>> deep.config["bottleneck_blocks"], bool(torch.allclose(deep(x), net(x), atol=1e-6))
    (2, True)
    """
    if type(net) is not DenoisingUNet:
        raise TypeError(f"deepen_bottleneck takes a DenoisingUNet, got {type(net).__name__}")
    return _deepened(net, "bottleneck_blocks", blocks)


def add_wiener(net, window=48, hop=16):
    """A copy of a :class:`DenoisingUNet` given a sliding-window Wiener input channel, computing the same.

    The weights reading the new channel and the output gate start at zero, so
    training teaches a trained denoiser to use the estimate where it helps
    (lattices) without first unlearning anything.

    Examples
    --------
    >>> import torch
    >>> from hyperspy_partialscan.models.growth import add_wiener
    >>> from hyperspy_partialscan.models.networks import DenoisingUNet
    >>> net = DenoisingUNet(width=4)
    >>> _ = torch.nn.init.normal_(net.out.weight)  # a net that does not output its input
    >>> guided = add_wiener(net, 16, 8)
    >>> x = torch.rand(1, 2, 32, 32)
    >>> guided.config["wiener"], bool(torch.allclose(guided(x), net(x), atol=1e-6))
    ([16, 8], True)
    """
    if type(net) is not DenoisingUNet:
        raise TypeError(f"add_wiener takes a DenoisingUNet, got {type(net).__name__}")
    if net.wiener is not None:
        raise ValueError(f"the network already has a Wiener channel {net.config['wiener']}")
    state = dict(net.state_dict())
    first = "enc.0.0.weight"  # the first convolution reads one more channel, with zero weights
    state[first] = torch.cat([state[first], torch.zeros_like(state[first][:, :1])], 1)
    return _grown(net, "gate.", state, wiener=(window, hop))
