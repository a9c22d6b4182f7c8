"""Models: I3D + pose teacher, MobileNetV3 student, temporal heads, size presets."""
