"""Data: the VoxCeleb list formats and tools, the embedded toy corpus generator, and notebook 00's set-up."""
