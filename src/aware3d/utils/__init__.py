"""Small dependency-free helpers shared across aware3d (no heavy imports here)."""
