"""The torchvision and HF model families' shapes, written in plain torch with random weights (small widths and
inputs so the float interpreter runs them in seconds).  Each builder returns ``(module, example inputs)``; the
inputs are a tuple (the language models take token ids and an attention mask)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch_models import randomize


def _cbr(cin: int, cout: int, k: int, s: int = 1, g: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * 4
        self.body = nn.Sequential(_cbr(cin, mid, 1), _cbr(mid, mid, 3, stride), _cbr(mid, cout, 1, act=None))
        self.down = _cbr(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.down(x))


class ResNet(nn.Module):
    """ResNet-50's shape: a 7x7 stem, max pooling, bottleneck stages, global average pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, 16, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(Bottleneck(16, 8, 1), Bottleneck(32, 8, 1), Bottleneck(32, 16, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type[nn.Module], se: bool) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [_cbr(cin, mid, 1, act=act), _cbr(mid, mid, 3, stride, mid, act=act)]
        if se:
            layers.append(SqueezeExcite(mid, max(mid // 4, 4)))
        layers.append(_cbr(mid, cout, 1, act=None))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_res else y


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int, gate: type[nn.Module] = nn.Hardsigmoid, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _cbr(3, 16, 3, 2, act=nn.ReLU6),
            InvertedResidual(16, 16, 1, 1, nn.ReLU6, False),
            InvertedResidual(16, 24, 2, 6, nn.ReLU6, False),
            InvertedResidual(24, 24, 1, 6, nn.ReLU6, False),
            _cbr(24, 64, 1, act=nn.ReLU6),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class MobileNetV3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _cbr(3, 16, 3, 2, act=nn.Hardswish),
            InvertedResidual(16, 16, 2, 1, nn.ReLU, True),
            InvertedResidual(16, 24, 2, 4, nn.Hardswish, True),
            InvertedResidual(24, 24, 1, 3, nn.Hardswish, True),
            _cbr(24, 48, 1, act=nn.Hardswish),
        )
        self.classifier = nn.Sequential(nn.Linear(48, 64), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class MBConv(nn.Module):
    """EfficientNet's block: SiLU, squeeze-excite with a sigmoid gate."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_cbr(cin, mid, 1, act=nn.SiLU))
        layers += [
            _cbr(mid, mid, 3, stride, mid, act=nn.SiLU),
            SqueezeExcite(mid, max(cin // 4, 1), gate=nn.Sigmoid, act=nn.SiLU),
            _cbr(mid, cout, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class EfficientNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _cbr(3, 16, 3, 2, act=nn.SiLU), MBConv(16, 16, 1, 1), MBConv(16, 24, 2, 6), MBConv(24, 24, 1, 6)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(24, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(feats, 1)
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class DenseNet(nn.Module):
    def __init__(self, growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        self.block1 = nn.ModuleList(DenseLayer(16 + i * growth, growth) for i in range(3))
        c = 16 + 3 * growth
        self.trans = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)
        )
        self.block2 = nn.ModuleList(DenseLayer(c // 2 + i * growth, growth) for i in range(2))
        self.norm = nn.BatchNorm2d(c // 2 + 2 * growth)
        self.fc = nn.Linear(c // 2 + 2 * growth, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for layer in self.block1:
            feats.append(layer(feats))
        feats = [self.trans(torch.cat(feats, 1))]
        for layer in self.block2:
            feats.append(layer(feats))
        x = F.relu(self.norm(torch.cat(feats, 1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.e1, self.e3 = nn.Conv2d(squeeze, e1, 1), nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.e1(s)), torch.relu(self.e3(s))], 1)


class SqueezeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 8, 16, 16), Fire(32, 8, 16, 16), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 16, 32, 32),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(64, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_cbr(cin, cin, 3, stride, cin, act=None), _cbr(cin, half, 1))
        src = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            _cbr(src, half, 1), _cbr(half, half, 3, stride, half, act=None), _cbr(half, half, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, 16, 3, 2), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1), ShuffleUnit(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean([2, 3]))


class InceptionBlock(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = _cbr(cin, 8, 1)
        self.b2 = nn.Sequential(_cbr(cin, 8, 1), _cbr(8, 12, 3))
        self.b3 = nn.Sequential(_cbr(cin, 4, 1), _cbr(4, 8, 5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _cbr(cin, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class Inception(nn.Module):
    """GoogLeNet / Inception-v3's shape: a stem, parallel 1x1 / 3x3 / 5x5 / pool branches joined by concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, 16, 3, 2), nn.MaxPool2d(3, 2, ceil_mode=True))
        self.a, self.b = InceptionBlock(16), InceptionBlock(36)
        self.pool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.fc = nn.Linear(36, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.pool(self.a(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        cfg = [16, 16, "M", 32, 32, "M", 64, "M"]
        layers: list[nn.Module] = []
        c = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(64 * 4, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64), nn.ReLU(True), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class Attention(nn.Module):
    """Multi-head attention written out (q, k, v projections); ``mask`` is additive (eager) or boolean (sdpa)."""

    def __init__(self, dim: int, heads: int, sdpa: bool = False) -> None:
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, s, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, h, d // h).permute(0, 2, 1, 3)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // h)
            if mask is not None:
                scores = scores + mask
            y = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o(y.permute(0, 2, 1, 3).reshape(b, s, d))


class ViT(nn.Module):
    def __init__(self, dim: int = 32, patch: int = 8, image: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


class ViTBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, 4)
        self.ln2, self.mlp = (
            nn.LayerNorm(dim, eps=1e-6),
            nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Bert(nn.Module):
    """A BERT-like encoder: word + position + token-type embeddings (ids from buffers), post-norm blocks; the
    padding mask either HF's eager additive form or a boolean mask for scaled_dot_product_attention."""

    def __init__(self, sdpa: bool, vocab: int = 50, dim: int = 32, seq: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.sdpa = sdpa
        self.words, self.positions, self.types = nn.Embedding(vocab, dim), nn.Embedding(seq, dim), nn.Embedding(2, dim)
        self.register_buffer("position_ids", torch.arange(seq).expand(1, -1), persistent=False)
        self.register_buffer("token_type_ids", torch.zeros(1, seq, dtype=torch.long), persistent=False)
        self.ln = nn.LayerNorm(dim, eps=1e-12)
        self.attn = nn.ModuleList(Attention(dim, 4, sdpa) for _ in range(layers))
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim, eps=1e-12) for _ in range(layers))
        self.ffn = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim)) for _ in range(layers)
        )
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim, eps=1e-12) for _ in range(layers))
        self.pooler = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        types = self.token_type_ids[:, :s].expand(ids.shape[0], s)
        x = self.ln(self.words(ids) + self.positions(self.position_ids[:, :s]) + self.types(types))
        if self.sdpa:
            mask = attention_mask[:, None, None, :].bool().expand(-1, 1, s, -1)
        else:
            mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for attn, ln1, ffn, ln2 in zip(self.attn, self.ln1, self.ffn, self.ln2, strict=True):
            x = ln1(x + attn(x, mask))
            x = ln2(x + ffn(x))
        return torch.tanh(self.pooler(x[:, 0]))


class GPT2(nn.Module):
    """A GPT-2-like decoder: learned positions from arange, pre-norm blocks, a causal mask from a buffer
    (``torch.where`` over the scores, eager) or a causal-and-padding boolean mask (sdpa), tanh GELU, tied head."""

    def __init__(self, sdpa: bool, vocab: int = 50, dim: int = 32, seq: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.sdpa, self.heads = sdpa, 4
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(seq, dim)
        self.register_buffer("bias", torch.tril(torch.ones(seq, seq, dtype=torch.bool)).view(1, 1, seq, seq))
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.c_attn = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.c_proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU("tanh"), nn.Linear(4 * dim, dim)) for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(dim)

    def attention(self, i: int, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.c_attn[i](x).split(d, dim=2)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        causal = self.bias[:, :, :s, :s]
        if self.sdpa:
            mask = causal & pad[:, None, None, :].bool()
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.heads)
            w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
            w = w + (1.0 - pad[:, None, None, :].to(w.dtype)) * torch.finfo(w.dtype).min
            y = torch.matmul(torch.softmax(w, dim=-1), v)
        return self.c_proj[i](y.transpose(1, 2).contiguous().view(b, s, d))

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        pos = torch.arange(0, s, dtype=torch.long).unsqueeze(0)
        x = self.wte(ids) + self.wpe(pos)
        for i in range(len(self.ln1)):
            x = x + self.attention(i, self.ln1[i](x), attention_mask)
            x = x + self.mlp[i](self.ln2[i](x))
        return F.linear(self.ln_f(x), self.wte.weight)


def _image(shape: tuple[int, ...]) -> Callable[[int], tuple[torch.Tensor, ...]]:
    return lambda seed: (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)),)


def _tokens(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (2, 16), generator=g)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 11:] = 0  # the second sequence is padded
    return ids, mask


# name -> (constructor, example inputs by seed)
ZOO: dict[str, tuple[Callable[[], nn.Module], Callable[[int], tuple[torch.Tensor, ...]]]] = {
    "resnet": (ResNet, _image((1, 3, 64, 64))),
    "mobilenet_v2": (MobileNetV2, _image((1, 3, 64, 64))),
    "mobilenet_v3": (MobileNetV3, _image((1, 3, 64, 64))),
    "efficientnet": (EfficientNet, _image((1, 3, 64, 64))),
    "densenet": (DenseNet, _image((1, 3, 64, 64))),
    "squeezenet": (SqueezeNet, _image((1, 3, 64, 64))),
    "shufflenet_v2": (ShuffleNetV2, _image((1, 3, 64, 64))),
    "inception": (Inception, _image((1, 3, 64, 64))),
    "vgg": (VGG, _image((1, 3, 32, 32))),
    "vit": (ViT, _image((1, 3, 32, 32))),
    "bert_eager": (lambda: Bert(False), _tokens),
    "bert_sdpa": (lambda: Bert(True), _tokens),
    "gpt2_eager": (lambda: GPT2(False), _tokens),
    "gpt2_sdpa": (lambda: GPT2(True), _tokens),
}


def build_zoo(name: str, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    ctor, inputs = ZOO[name]
    torch.manual_seed(seed)
    return randomize(ctor(), seed), inputs(seed + 1)
