"""The rendering core: pure, differentiable, batched functions shared by every method.

Nothing here owns a parameter or an optimizer; methods compose these pieces.
"""
from ._checks import ShapeError
from .cameras import (image_rays, interpolate_poses, intrinsics, intrinsics_from_fov, look_at,
                      patch_rays, patch_uv, project, rays_from_pixels, sample_poses_sphere,
                      spiral_path, turntable_path)
from .compose import compose
from .encodings import (cam_modulate, film_siren, giraffe_encoding, nerf_encoding,
                        positional_encoding, siren_init_, spherical_harmonics)
from .samplers import (hierarchical_samples, near_far_aabb, near_far_sphere, points_along_rays,
                       sample_pdf, stratified_samples)
from .volume import (alphas_from_densities, composite, deltas_from_t, expected_depth, opacity,
                     render_weights, render_weights_packed_reference, transmittance, volume_render,
                     volume_render_packed)

__all__ = [n for n in dir() if not n.startswith("_")]
