"""cslr: continuous sign language recognition trainer (I3D + pose teacher, MobileNetV3 student)."""

__version__ = "0.1.0"
