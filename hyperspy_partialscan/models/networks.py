"""PyTorch networks: the two-scale partial-scan generator and its discriminators.

The generator follows Ede & Beanland (2020): an *inner* generator works on the
half-resolution input (strided convolutions down, residual blocks, transposed
convolutions up) and has an auxiliary *trainer* head that predicts a half-size
completion during training; an *outer* generator at full resolution merges its
own features with the inner ones through residual blocks.

Departures from the paper (documented in ``docs/model.md``):

* Input channels are the nearest-neighbour fill, a linear (Delaunay) fill, the
  scan mask and a squashed distance-to-nearest-sample map, and the network
  predicts a *residual* over the linear fill, which trains far faster on a CPU.
* Widths are much smaller (CPU training and inference), and the inner generator
  goes down to 1/8 resolution with dilated residual blocks so its receptive
  field (> 200 px) spans the arm gap of sparse scans.
* Batch normalisation is not used (per-frame statistics vary strongly across
  microscopes); the network is fully convolutional and works on any frame size
  that is a multiple of :attr:`PartialScanGenerator.multiple` (inputs are padded).

Growing a trained network (more blocks, a non-local block, a Wiener channel) so
that it starts from what it computes is :mod:`hyperspy_partialscan.models.growth`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PartialScanGenerator", "DenoisingUNet", "NonLocalBlock", "UncertaintyUNet", "MultiScaleDiscriminator",
           "build_network"]


def _act():
    return nn.LeakyReLU(0.1, inplace=True)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (optionally dilated)."""

    def __init__(self, channels, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = _act()

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x)))


def _dilated_blocks(channels, n):
    """``n`` :class:`ResBlock` s whose dilations cycle 1, 2, 4: wide context at a coarse scale for few weights."""
    return nn.Sequential(*[ResBlock(channels, dilation=(1, 2, 4)[i % 3]) for i in range(n)])


class PartialScanGenerator(nn.Module):
    """Two-scale generator (inner at half resolution with a trainer head, outer at full).

    Parameters
    ----------
    in_channels : int
        Number of input channels (see :mod:`hyperspy_partialscan.models.features`).
    width : int
        Channels of the outer (full-resolution) generator; the inner generator
        uses ``2 * width`` at 1/4 and 1/8 resolution.
    inner_blocks : int
        Residual blocks at 1/8 resolution (dilations cycle 1, 2, 4).
    attention_heads : int
        Heads of a :class:`NonLocalBlock` after the inner blocks (0: none), on
        the 1/8-resolution features (4,096 positions for a 512 px frame; keys
        and values from their 2x2 means), so the unit cells of a lattice that
        the scan crosses inform those between its lines.
    outer_blocks : int
        Residual blocks at 1/2 resolution in the outer generator.
    residual_channel : int or None
        Input channel the output is a residual over (the linear fill); None to
        predict the frame directly.
    """

    multiple = 16

    def __init__(self, in_channels=4, width=24, inner_blocks=6, outer_blocks=2, residual_channel=1,
                 attention_heads=0):
        super().__init__()
        w, w2 = width, 2 * width
        self.config = dict(
            in_channels=in_channels,
            width=width,
            inner_blocks=inner_blocks,
            outer_blocks=outer_blocks,
            residual_channel=residual_channel,
        )
        self.residual_channel = residual_channel
        # inner generator, on the half-resolution input
        self.inner_in = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1), _act())
        self.inner_down1 = nn.Sequential(nn.Conv2d(w, w2, 3, stride=2, padding=1), _act())  # 1/4
        self.inner_down2 = nn.Sequential(nn.Conv2d(w2, w2, 3, stride=2, padding=1), _act())  # 1/8
        self.inner_blocks = _dilated_blocks(w2, inner_blocks)
        self.attention = None
        if attention_heads:
            self.config["attention_heads"] = int(attention_heads)
            self.attention = NonLocalBlock(w2, heads=int(attention_heads), kv_stride=2)
        self.inner_up1 = nn.Sequential(nn.ConvTranspose2d(w2, w2, 4, stride=2, padding=1), _act())  # 1/4
        self.inner_up2 = nn.Sequential(nn.ConvTranspose2d(w2, w, 4, stride=2, padding=1), _act())  # 1/2
        self.trainer = nn.Conv2d(w, 1, 3, padding=1)
        # outer generator, at full resolution
        self.outer_in = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1), _act())
        self.outer_down = nn.Sequential(nn.Conv2d(w, w, 3, stride=2, padding=1), _act())  # 1/2
        self.merge = nn.Sequential(nn.Conv2d(2 * w, w, 1), _act())
        self.outer_blocks = nn.Sequential(*[ResBlock(w) for _ in range(outer_blocks)])
        self.outer_up = nn.Sequential(nn.ConvTranspose2d(w, w, 4, stride=2, padding=1), _act())
        self.out = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), _act(), nn.Conv2d(w, 1, 3, padding=1))
        # start as the identity over the base fill: the residual branch begins at zero
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _base(self, x):
        if self.residual_channel is None:
            return 0
        return x[:, self.residual_channel : self.residual_channel + 1]

    def forward(self, x, return_trainer=False):
        """Complete a batch ``x`` of shape (N, C, H, W) with H, W multiples of 16.

        Returns the completion (N, 1, H, W) and, with ``return_trainer``, the
        trainer head's half-size completion (N, 1, H/2, W/2).
        """
        half = F.avg_pool2d(x, 2)
        i0 = self.inner_in(half)
        i1 = self.inner_down1(i0)
        i2 = self.inner_blocks(self.inner_down2(i1))
        if self.attention is not None:
            i2 = self.attention(i2)
        inner = self.inner_up2(self.inner_up1(i2) + i1) + i0
        o0 = self.outer_in(x)
        o1 = self.merge(torch.cat([self.outer_down(o0), inner], 1))
        o1 = self.outer_blocks(o1)
        y = self.out(torch.cat([self.outer_up(o1), o0], 1)) + self._base(x)
        if return_trainer:
            return y, self.trainer(inner) + self._base(half)
        return y


class _Discriminator(nn.Module):
    """PatchGAN-style discriminator with spectral normalisation."""

    def __init__(self, in_channels=2, width=32, depth=4):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers, c = [], in_channels
        for i in range(depth):
            layers += [sn(nn.Conv2d(c, width * 2**i, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            c = width * 2**i
        layers.append(sn(nn.Conv2d(c, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """Discriminators on random crops of several sizes (Ede & Beanland: 70/140/280 px).

    Each discriminator sees a random crop of its size (resized to ``crops[0]``
    so all share the same cost), conditioned on the partial scan: its input is
    the (real or generated) frame and the nearest-filled partial scan.
    """

    def __init__(self, crops=(70, 140, 280), width=32):
        super().__init__()
        self.crops = tuple(crops)
        self.discriminators = nn.ModuleList([_Discriminator(2, width) for _ in crops])

    def forward(self, image, condition, generator=None):
        """Scores of each scale for ``image`` conditioned on ``condition``.

        Crops larger than the image are clipped to it. ``generator`` is a
        :class:`torch.Generator` for the crop positions (so real and fake see
        the same crops when called with equally seeded generators).
        """
        x = torch.cat([image, condition], 1)
        h, w = x.shape[-2:]
        out = []
        for size, disc in zip(self.crops, self.discriminators):
            s = min(size, h, w)
            r = int(torch.randint(0, h - s + 1, (1,), generator=generator))
            c = int(torch.randint(0, w - s + 1, (1,), generator=generator))
            crop = x[..., r : r + s, c : c + s]
            if s != self.crops[0]:
                crop = F.interpolate(crop, size=(self.crops[0], self.crops[0]), mode="area")
            out.append(disc(crop))
        return out


class NonLocalBlock(nn.Module):
    """Multi-head self-attention over every position of a feature map, added to it.

    The learnt form of non-local means (and of BM3D's block matching): each
    position gathers the features of the positions that look like it anywhere
    in the frame, e.g. the other unit cells of a lattice, without a positional
    code, so the block is translation-equivariant like the convolutions. The
    output projection starts at zero: a block added to a trained network
    starts as the identity.

    Parameters
    ----------
    channels : int
    heads : int
    head_dim : int
        Channels per head of the queries, keys and values.
    kv_stride : int
        Keys and values from the map averaged over ``kv_stride`` ² blocks
        (1: every position), which divides the cost by ``kv_stride`` ²; every
        position still queries.
    """

    def __init__(self, channels, heads=2, head_dim=32, kv_stride=1):
        super().__init__()
        self.heads, self.head_dim, self.kv_stride = heads, head_dim, kv_stride
        self.norm = nn.GroupNorm(1, channels)
        self.qkv = nn.Conv2d(channels, 3 * heads * head_dim, 1)
        self.proj = nn.Conv2d(heads * head_dim, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _heads(self, t):
        """(n, c, h, w) projections as (c // (heads * head_dim), n, heads, positions, head_dim), contiguous: the CPU
        kernel is ~4x slower on strided views."""
        n, c, h, w = t.shape
        return t.reshape(n, c // (self.heads * self.head_dim), self.heads, self.head_dim, h * w) \
            .permute(1, 0, 2, 4, 3).contiguous()

    def forward(self, x):
        n, _, h, w = x.shape
        qkv = self.qkv(self.norm(x))
        if self.kv_stride == 1:
            q, k, v = self._heads(qkv)
        else:
            split = self.heads * self.head_dim  # queries at every position, keys and values from block means
            q = self._heads(qkv[:, :split])[0]
            k, v = self._heads(F.avg_pool2d(qkv[:, split:], self.kv_stride, ceil_mode=True))
        y = F.scaled_dot_product_attention(q, k, v)  # (n, heads, h * w, head_dim)
        return x + self.proj(y.transpose(-1, -2).reshape(n, self.heads * self.head_dim, h, w))


class DenoisingUNet(nn.Module):
    """U-Net denoiser predicting a residual over the noisy input.

    Input channels: the normalised noisy frame and a noise-level map (see
    :mod:`hyperspy_partialscan.models.features`). Four scales (full, 1/2, 1/4,
    1/8) with widths ``width * (1, 2, 4, 8)``; two 3x3 convolutions per scale.

    Parameters
    ----------
    in_channels : int
    width : int
    attention_heads : int
        Heads of a :class:`NonLocalBlock` on the 1/8-scale features (0: none).
        Its cost grows with the square of the number of positions: a 512 px
        tile has 4,096 of them at 1/8 scale.
    bottleneck_blocks : int
        Residual blocks (dilations 1, 2, 4, ...) on the 1/8-scale features,
        after the non-local block (0: none).
    wiener : (int, int), optional
        ``(window, hop)`` of a sliding-window Wiener estimate of the frame
        (:func:`~hyperspy_partialscan.models.wiener.sliding_wiener`, with the
        noise variance of the noise-level channel), computed in the forward
        pass, given to the U-Net as an extra input channel and blended into
        the output by a per-pixel gate (a 1x1 convolution of the last
        features): periodic content (atomic lattices) that no convolution of
        this size resolves from the noise. None: no such channel.
    """

    multiple = 8

    def __init__(self, in_channels=2, width=16, attention_heads=0, bottleneck_blocks=0, wiener=None):
        super().__init__()
        self.config = dict(in_channels=in_channels, width=width)
        ws = [width * 2**i for i in range(4)]

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), _act(),
                                 nn.Conv2d(cout, cout, 3, padding=1), _act())

        self.wiener = None
        if wiener is not None:
            window, hop = (int(v) for v in wiener)
            if hop < 1 or window < 2 * hop or window % hop:
                raise ValueError(f"wiener must be (window, hop) with hop >= 1 and window a multiple of hop of at "
                                 f"least 2 hop, got {tuple(wiener)}")
            self.config["wiener"] = [window, hop]
            self.wiener = (window, hop)
        first = in_channels + (self.wiener is not None)
        self.enc = nn.ModuleList([block(first, ws[0])] + [block(ws[i], ws[i + 1]) for i in range(3)])
        if self.wiener is not None:
            self.gate = nn.Conv2d(ws[0], 1, 1)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        self.up = nn.ModuleList([nn.ConvTranspose2d(ws[i + 1], ws[i], 2, stride=2) for i in range(3)])
        self.dec = nn.ModuleList([block(2 * ws[i], ws[i]) for i in range(3)])
        self.out = nn.Conv2d(ws[0], 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.attention = None
        if attention_heads:
            self.config["attention_heads"] = int(attention_heads)
            self.attention = NonLocalBlock(ws[3], heads=int(attention_heads))
        self.bottleneck_blocks = None
        if bottleneck_blocks:
            self.config["bottleneck_blocks"] = int(bottleneck_blocks)
            self.bottleneck_blocks = _dilated_blocks(ws[3], int(bottleneck_blocks))

    def guided(self, x):
        """``x`` with the Wiener estimate of its frame appended (unchanged without ``wiener``)."""
        if self.wiener is None:
            return x
        from .features import NOISE_MAP_GAIN
        from .wiener import sliding_wiener

        with torch.autocast(x.device.type, enabled=False):  # FFTs in float32
            frame = x[:, :1].float()
            guide = sliding_wiener(frame, (x[:, 1:2].float() / NOISE_MAP_GAIN) ** 2, *self.wiener)
        return torch.cat([x, guide.to(x.dtype)], 1)

    def features(self, x):
        """The U-Net's full-resolution features (before the output convolution)."""
        return self._unet(self.guided(x))

    def _unet(self, h):
        skips = []
        for i, enc in enumerate(self.enc):
            h = enc(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        h = self.bottleneck(h)
        for i in reversed(range(3)):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], 1))
        return h

    def bottleneck(self, h):
        """Hook on the coarsest features: the non-local block and the residual blocks, if any."""
        h = h if self.attention is None else self.attention(h)
        return h if self.bottleneck_blocks is None else self.bottleneck_blocks(h)

    def forward(self, x):
        g = self.guided(x)
        h = self._unet(g)
        y = x[:, :1] + self.out(h)
        if self.wiener is None:
            return y
        # a per-pixel gate moves the output towards the Wiener estimate where the features say it is better
        return y + self.gate(h) * (g[:, -1:] - x[:, :1])


class UncertaintyUNet(DenoisingUNet):
    """Predicts the log standard deviation of a completion's error, per pixel.

    The same U-Net as :class:`DenoisingUNet` without the residual: its inputs
    are the generator's input channels, the completion and a noise-level map
    (:func:`~hyperspy_partialscan.models.features.uncertainty_inputs`); its
    output is ``log(sigma)`` in normalised intensity units, sigma being the
    predicted standard deviation of the completion's error against the
    training target (the Gaussian-blurred truth). Trained with a Gaussian
    negative log-likelihood on the errors of a frozen generator (the per-pixel
    form of the adaptive-scanning paper's critic).

    Parameters
    ----------
    in_channels : int
    width : int
    context : bool
        Add the frame's global feature statistics (mean and standard
        deviation of the coarsest features, through a linear layer) to every
        coarse feature, so that sigma can follow how hard the whole frame is
        (e.g. a lattice near the paths' spacing) as well as the local evidence.
    downscale : int
        The U-Net runs on ``downscale`` x ``downscale`` block means of the
        inputs and its output is interpolated back (bilinear) to the input's
        pixels: sigma varies slowly, and at 2 the network costs about a
        fifth of the full-resolution one. 1: full resolution.

    Examples
    --------
    >>> import torch
    >>> from hyperspy_partialscan.models.networks import UncertaintyUNet
    >>> net = UncertaintyUNet(6, 4, downscale=2)
    >>> net.multiple, net.config["downscale"], tuple(net(torch.zeros(1, 6, 32, 48)).shape)
    (16, 2, (1, 1, 32, 48))
    """

    #: log sigma the untrained network starts from (5 % of the normalised range)
    INITIAL_LOG_SIGMA = -3.0
    #: bounds of the predicted log sigma (normalised units)
    LOG_SIGMA_RANGE = (-12.0, 3.0)

    def __init__(self, in_channels=6, width=8, context=False, downscale=1):
        super().__init__(in_channels=in_channels, width=width)
        nn.init.constant_(self.out.bias, self.INITIAL_LOG_SIGMA)
        if int(downscale) != downscale or downscale < 1:
            raise ValueError(f"downscale must be a positive integer, got {downscale!r}")
        self.downscale = int(downscale)
        if self.downscale > 1:
            self.config["downscale"] = self.downscale
            self.multiple = DenoisingUNet.multiple * self.downscale
        self.context = None
        if context:  # the frame's global statistics, added to every coarse feature: how hard is this frame?
            self.config["context"] = True
            self.context = nn.Linear(2 * 8 * width, 8 * width)
            nn.init.zeros_(self.context.weight)
            nn.init.zeros_(self.context.bias)

    def bottleneck(self, h):
        if self.context is None:
            return h
        stats = torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3))], 1)
        return h + self.context(stats)[:, :, None, None]

    def forward(self, x):
        y = self.out(self.features(x if self.downscale == 1 else F.avg_pool2d(x, self.downscale)))
        if self.downscale > 1:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y.clamp(*self.LOG_SIGMA_RANGE)


NETWORKS = {"PartialScanGenerator": PartialScanGenerator, "DenoisingUNet": DenoisingUNet,
            "UncertaintyUNet": UncertaintyUNet}


def build_network(architecture, config):
    """Build a network from its architecture name and constructor config."""
    try:
        cls = NETWORKS[architecture]
    except KeyError:
        raise ValueError(f"unknown network architecture {architecture!r}; known: {', '.join(NETWORKS)}") from None
    return cls(**config)
