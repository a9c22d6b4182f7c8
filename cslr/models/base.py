"""What every architecture's config shares: the CTC classes and the input streams it takes."""

from __future__ import annotations


class StreamsConfig:
    """Mixin for an architecture's config dataclass with `num_classes` and `modality` fields; the subclass lists the
    stream sets it accepts in MODALITIES."""

    MODALITIES: tuple[str, ...] = ()

    def check_classes_and_streams(self) -> None:
        """Called by the subclass's __post_init__ (YAML and checkpoints give lists where tuples are meant)."""
        if hasattr(self, "pose_parts"):
            self.pose_parts = tuple(self.pose_parts)
        name = type(self).__name__
        if self.modality not in self.MODALITIES:
            raise ValueError(f"{name}.modality {self.modality!r}: choose from {self.MODALITIES}")
        if self.num_classes < 2:
            raise ValueError(f"{name}.num_classes must count the blank and at least one gloss, got {self.num_classes}")

    @property
    def streams(self) -> tuple[str, ...]:
        """The input streams, in the order "rgb", "pose"."""
        return tuple(self.modality.split("+"))
