"""The QUANTA reference network (Orhand et al., KES 2021), for 32x32 RGB inputs scaled to [0, 1].

    Block(c) = Conv3x3(c) -> ELU -> BatchNorm -> Conv3x3(c) -> ELU -> BatchNorm -> MaxPool2 -> Dropout(0.3)
    net      = Block(64) -> Block(128) -> Block(512) -> Flatten -> Dense(2048) -> ELU -> Dropout(0.5)
               -> Dense(n_classes)

BatchNorm comes after the activation, as in the reference. The seven transfer points are the
pre-activation outputs of the six convolutions and the Dense(2048) (``layer{i}``); QUANTA mixes
source and target at ``act{i}``. Keras defaults are kept where they matter for parity:
glorot-uniform init, BatchNorm eps 1e-3 and momentum 0.01 (PyTorch convention).
"""

from __future__ import annotations

import torch
from torch import nn

from tlcore.data.loading import Preprocessing
from tlcore.models.base import BackboneConfig, register_backbone

CHANNELS = (64, 64, 128, 128, 512, 512)
N_LAYERS = 7


class QuantaCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        c_in = in_channels
        for i, c in enumerate(CHANNELS):
            setattr(self, f"layer{i}", nn.Conv2d(c_in, c, 3, padding=1))
            setattr(self, f"act{i}", nn.ELU())
            setattr(self, f"bn{i}", nn.BatchNorm2d(c, eps=1e-3, momentum=0.01))
            if i % 2 == 1:
                setattr(self, f"pool{i // 2}", nn.MaxPool2d(2))
                setattr(self, f"drop{i // 2}", nn.Dropout(0.3))
            c_in = c
        spatial = input_size // 8
        self.flatten = nn.Flatten()
        self.layer6 = nn.Linear(CHANNELS[-1] * spatial * spatial, 2048)
        self.act6 = nn.ELU()
        self.drop3 = nn.Dropout(0.5)
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(6):
            x = getattr(self, f"bn{i}")(getattr(self, f"act{i}")(getattr(self, f"layer{i}")(x)))
            if i % 2 == 1:
                x = getattr(self, f"drop{i // 2}")(getattr(self, f"pool{i // 2}")(x))
        x = self.drop3(self.act6(self.layer6(self.flatten(x))))
        return self.fc(x)


def _units(net: nn.Module) -> list[str]:
    return [f"layer{i}" for i in range(N_LAYERS)]


@register_backbone(BackboneConfig(
    name="quanta_cnn",
    family="quanta_cnn",
    preprocessing=Preprocessing(32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    taps=tuple(f"act{i}" for i in range(N_LAYERS)),
    head_path="fc",
    weights={},
    default_weights=None,
    freeze_units=_units,
    quanta_points=tuple((f"layer{i}", f"act{i}") for i in range(N_LAYERS)),
    fixed_input_size=True,
    description="QUANTA reference CNN (KES 2021): 3 conv blocks + Dense(2048), 32x32, trained from scratch",
))
def quanta_cnn() -> nn.Module:
    return QuantaCNN()
