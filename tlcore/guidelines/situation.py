"""The practitioner's situation: what the walkthrough asks (labels, domain, device, budget, tuning
time), the named domains and GPUs it offers, and the checks on each answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tlcore.errors import SpecError


@dataclass(frozen=True)
class Domain:
    label: str
    shift: str  # "output": same kind of images, new labels; "input": images look unlike everyday photos
    example: str


DOMAINS: dict[str, Domain] = {
    "imagenet_like": Domain("Everyday photos (objects, animals, ImageNet-like)", "output", "pets, products"),
    "fine_grained": Domain("Fine-grained photos (species, car models)", "output", "birds, flowers"),
    "scenes": Domain("Scenes and places", "output", "indoor rooms, landscapes"),
    "textures": Domain("Textures and materials", "input", "fabrics, surfaces"),
    "medical": Domain("Medical images", "input", "X-rays, histology, dermoscopy"),
    "satellite": Domain("Satellite and aerial images", "input", "land use, crops"),
    "art": Domain("Art, sketches, drawings", "input", "paintings, doodles"),
    "documents": Domain("Documents, digits and symbols", "input", "handwriting, scans"),
}
TUNING_TIMES = {"none": "None: one configuration", "hours": "A few hours", "days": "Days"}


@dataclass(frozen=True)
class GPU:
    """A named accelerator's rated dense bf16/fp16 tensor throughput and board power (spec sheets)."""

    label: str
    peak_tflops: float
    board_power_w: float


GPUS: dict[str, GPU] = {
    "t4": GPU("NVIDIA T4", 65.0, 70.0),
    "l4": GPU("NVIDIA L4", 121.0, 72.0),
    "v100": GPU("NVIDIA V100 SXM2", 125.0, 300.0),
    "a100": GPU("NVIDIA A100 SXM4", 312.0, 400.0),
    "h100": GPU("NVIDIA H100 SXM5", 989.0, 700.0),
}
#: Share of a GPU's rated peak a training step reaches in practice (an assumption, shown to the user).
GPU_UTILISATION = 0.3


@dataclass(frozen=True)
class Situation:
    """What the user told the walkthrough."""

    samples_per_class: int
    num_classes: int
    domain: str = "imagenet_like"
    device: str = "this_machine"  # or a key of GPUS
    budget_hours: float | None = None
    budget_kwh: float | None = None
    tuning_time: str = "hours"
    deployment_shift: bool = False
    backbone: str = "efficientnet_lite0"
    dataset: str | None = None
    epochs: int = 40
    use_crops: bool = False
    resolution: int | None = None  # input size; None = the backbone's (tiny images: see tlcore.data.resolution)

    def validate(self) -> Situation:
        def bad(name: str, allowed: str, value: Any) -> SpecError:
            return SpecError(f"The '{name}' answer must be {allowed}. Got {value!r} instead.")

        if not isinstance(self.samples_per_class, int) or self.samples_per_class < 1:
            raise bad("samples per class", "an integer >= 1", self.samples_per_class)
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise bad("number of classes", "an integer >= 2", self.num_classes)
        if self.domain not in DOMAINS:
            raise bad("domain", "one of " + ", ".join(DOMAINS), self.domain)
        if self.device != "this_machine" and self.device not in GPUS:
            raise bad("device", "this_machine or one of " + ", ".join(GPUS), self.device)
        if self.tuning_time not in TUNING_TIMES:
            raise bad("time for tuning", "one of " + ", ".join(TUNING_TIMES), self.tuning_time)
        for name, v in (("budget hours", self.budget_hours), ("budget kWh", self.budget_kwh)):
            if v is not None and (not isinstance(v, (int, float)) or v <= 0):
                raise bad(name, "a positive number (or empty for no limit)", v)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("epochs", "an integer >= 1", self.epochs)
        return self

    @property
    def shift(self) -> str:
        return DOMAINS[self.domain].shift

    @property
    def train_images(self) -> int:
        return self.samples_per_class * self.num_classes
