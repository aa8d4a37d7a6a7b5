"""The environment checks of ``lgl-kit doctor``: torch and torchaudio as a matching pair, faiss, CUDA.

torchaudio loads its C extension at import, so importing it is the test that the pair matches; faiss
needs its GPU build where a clustering notebook asks for CUDA.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from types import ModuleType

from lgl_helpers.app.checks import Check, first_line

# Packages each notebook imports beyond the pure-Python stack (05 only records torch's version).
REQUIRES = {
    "00_data_setup": ("torch", "torchaudio"),
    "01_stage1_contrastive": ("torch", "torchaudio"),
    "02_clustering_umap": ("torch", "torchaudio", "faiss"),
    "03_stage2_baseline": ("torch", "torchaudio", "faiss"),
    "04_stage2_lgl": ("torch", "torchaudio", "faiss"),
    "05_compare": ("torch",),
}


SETUP_FIX = "`bash scripts/setup.sh`"


FAISS_FIX = "`bash scripts/setup.sh`, or pip install -e '.[cpu]' (CPU) / '.[gpu]' (GPU)"


Importer = Callable[[str], ModuleType]


def _not_installed(error: BaseException, package: str) -> bool:
    """True for the package itself missing, not for a module it fails to import."""
    return isinstance(error, ModuleNotFoundError) and error.name == package


def _installed_version(package: str, version_of: Callable[[str], str]) -> str:
    try:
        return version_of(package)
    except importlib.metadata.PackageNotFoundError:
        return "(no package metadata)"


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def check_torch(
    import_module: Importer = importlib.import_module,
    version_of: Callable[[str], str] = importlib.metadata.version,
    torchaudio: bool = True,
) -> Check:
    """torch imports and, with ``torchaudio``, so does torchaudio (C extension included) at torch's major.minor.

    ``import_module`` / ``version_of`` are injectable so that tests can simulate a broken pair.
    """
    try:
        torch = import_module("torch")
    except Exception as error:  # a broken install raises ImportError, OSError, RuntimeError ...
        return Check(
            "torch",
            False,
            f"torch {_installed_version('torch', version_of)} does not import "
            f"({first_line(error)}): reinstall the locked environment with {SETUP_FIX}",
        )
    if not torchaudio:
        return Check("torch", True, f"torch {torch.__version__} imports")
    fix = f"reinstall the locked pair with {SETUP_FIX} (or pip install torchaudio=={torch.__version__.split('+')[0]})"
    try:
        audio = import_module("torchaudio")
    except Exception as error:  # typically OSError: libtorchaudio.so: undefined symbol ...
        if _not_installed(error, "torchaudio"):
            return Check("torchaudio", False, f"torchaudio is not installed: {fix}")
        return Check(
            "torchaudio",
            False,
            f"torchaudio {_installed_version('torchaudio', version_of)} does not match "
            f"torch {torch.__version__} ({first_line(error)}): {fix}",
        )
    if _major_minor(audio.__version__) != _major_minor(torch.__version__):
        return Check(
            "torchaudio",
            False,
            f"torchaudio {audio.__version__} does not match torch {torch.__version__} "
            f"(their major.minor versions differ): {fix}",
        )
    return Check("torch", True, f"torch {torch.__version__} and torchaudio {audio.__version__} import as a pair")


def _devices(notebook_devices: dict[str, str]) -> str:
    """``{"02_...": "cuda"}`` → ``device='cuda' (02_...)``, one group per device value."""
    groups: dict[str, list[str]] = {}
    for name, device in notebook_devices.items():
        groups.setdefault(device, []).append(name)
    return "; ".join(f"device={device!r} ({', '.join(names)})" for device, names in groups.items())


def check_cuda(cuda_notebooks: dict[str, str], torch: ModuleType) -> Check:
    """Every notebook whose ``device`` asks for CUDA (notebook → device) gets a GPU torch can use."""
    if not torch.cuda.is_available():
        return Check(
            "cuda",
            False,
            f"{_devices(cuda_notebooks)} asks for CUDA but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}): set device=auto or "
            "cpu, or install a CUDA build of torch on a machine whose GPU driver works (nvidia-smi)",
        )
    count = torch.cuda.device_count()
    index = {name: device.partition(":")[2] for name, device in cuda_notebooks.items()}
    beyond = {name: cuda_notebooks[name] for name, i in index.items() if i.isdigit() and int(i) >= count}
    if beyond:
        return Check(
            "cuda",
            False,
            f"{_devices(beyond)} names a GPU beyond the {count} visible: "
            f"use device=cuda or cuda:0 ... cuda:{count - 1}",
        )
    return Check("cuda", True, f"{count} GPU(s) visible, cuda:0 is {torch.cuda.get_device_name(0)}")


def check_faiss(cuda_notebooks: dict[str, str], import_module: Importer = importlib.import_module) -> Check:
    """faiss imports; clustering notebooks whose ``device`` asks for CUDA (notebook → device) need its GPU build."""
    try:
        faiss = import_module("faiss")
    except Exception as error:
        if _not_installed(error, "faiss"):
            return Check("faiss", False, f"faiss is not installed: {FAISS_FIX}")
        return Check("faiss", False, f"faiss does not import ({first_line(error)}): reinstall it with {FAISS_FIX}")
    version = getattr(faiss, "__version__", "(unknown version)")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if cuda_notebooks and not gpus:
        return Check(
            "faiss",
            False,
            f"faiss {version} has no GPU support or sees no GPU, but {_devices(cuda_notebooks)} "
            "asks for CUDA: pip install -e '.[gpu]' (or LGL_FAISS=gpu bash scripts/setup.sh), "
            "or set device=auto to run k-means on the CPU",
        )
    return Check("faiss", True, f"faiss {version}, " + (f"GPU index on {gpus} GPU(s)" if gpus else "CPU index"))


def environment_checks(
    values: dict[str, dict],
    import_module: Importer = importlib.import_module,
    version_of: Callable[[str], str] = importlib.metadata.version,
) -> list[Check]:
    """The packages and devices the planned notebooks (name → parameter values) need."""
    needs = {package for name in values for package in REQUIRES[name]}
    if not needs:
        return []
    checks = [check_torch(import_module, version_of, torchaudio="torchaudio" in needs)]
    cuda = {name: v["device"] for name, v in values.items() if str(v.get("device", "")).startswith("cuda")}
    if cuda and checks[0].ok:
        checks.append(check_cuda(cuda, import_module("torch")))
    if "faiss" in needs:
        checks.append(check_faiss({n: d for n, d in cuda.items() if "faiss" in REQUIRES[n]}, import_module))
    return checks
