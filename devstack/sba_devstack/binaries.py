"""Find or build the `devcluster` binary (etcd + Kubernetes control plane + kubectl).

The binary is cached per content hash of devcluster/{go.mod,go.sum,main.go} under
`$SBA_CACHE_DIR` (default ~/.cache/sba-agentic) because a build takes many minutes; the
repo's git-ignored `.cache/bin/` then holds one symlink per component name, which the
binary dispatches on (argv[0]).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COMPONENTS = (
    "devcluster",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
)
K8S_VERSION = "v1.35.4"
_SOURCES = ("go.mod", "go.sum", "main.go")
# Stamp versions into the binary: kubectl and the apiserver otherwise report v0.0.0,
# which breaks version-skew checks in clients.
_LDFLAGS = " ".join(
    [
        "-s",
        "-w",
        f"-X k8s.io/component-base/version.gitVersion={K8S_VERSION}",
        "-X k8s.io/component-base/version.gitMajor=1",
        "-X k8s.io/component-base/version.gitMinor=35",
        f"-X k8s.io/client-go/pkg/version.gitVersion={K8S_VERSION}",
    ]
)


def cache_dir() -> Path:
    return Path(os.environ.get("SBA_CACHE_DIR") or Path.home() / ".cache" / "sba-agentic")


def source_hash(src_dir: Path) -> str:
    """First 12 hex digits of sha256 over the files that determine the build."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((src_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def cached_binary_path(repo_root: Path) -> Path:
    return cache_dir() / f"devcluster-{source_hash(repo_root / 'devcluster')}"


def build(src_dir: Path, target: Path) -> None:
    """`go build` into a temp file next to `target`, then rename atomically.

    The rename means a concurrent reader (another pytest worker, `make dev`) never
    sees a half-written binary.
    """
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the `go` toolchain is needed to build devcluster/ (not on PATH)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        cmd = [go, "build", "-trimpath", "-ldflags", _LDFLAGS, "-o", str(tmp), "."]
        print(f"building devcluster into {target} (takes several minutes)", file=sys.stderr)
        proc = subprocess.run(cmd, cwd=src_dir, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"go build failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        tmp.chmod(0o755)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    # Create-then-rename so the link is replaced atomically, never missing.
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def ensure_binaries(repo_root: Path) -> Path:
    """Make sure the devcluster binary exists and return the dir of per-component links."""
    repo_root = repo_root.resolve()
    binary = cached_binary_path(repo_root)
    if not binary.exists():
        build(repo_root / "devcluster", binary)
    bin_dir = repo_root / ".cache" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMPONENTS:
        _link(bin_dir / name, binary)
    return bin_dir


def default_repo_root() -> Path:
    # devstack/sba_devstack/binaries.py -> repo root (editable install).
    return Path(__file__).resolve().parents[2]


def main() -> None:
    print(ensure_binaries(default_repo_root()))


if __name__ == "__main__":
    main()
