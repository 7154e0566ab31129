"""Containerfile: hadolint clean, and the registry-free image build (scripts/build-image.sh):
debootstrap base, buildah chroot build of the `runtime-prebuilt` target, `gpuscout discover`
inside the image equal to the host run, image size printed."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import REPO, tool

CONTAINERFILE = REPO / "Containerfile"


def test_hadolint_clean():
    r = subprocess.run([tool("hadolint"), str(CONTAINERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_bites(tmp_path):
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM debian:bookworm\nADD gpuscout /usr/local/bin/\nRUN apt-get install curl\n")
    r = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3020" in r.stdout


def test_containerfile_shape():
    text = CONTAINERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, re.M)
    names = [s for _, s in stages]
    assert names == ["base", "runtime-prebuilt", "build", "runtime"], names
    # `runtime-prebuilt` is built without touching the Rust stage: it must come before it
    assert names.index("runtime-prebuilt") < names.index("build")
    assert "musl" not in text.lower().replace("not static musl", "")
    assert re.search(r"^USER 65532:65532$", text, re.M)
    for label in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in text, label


def test_image_builds_and_discovers_inside():
    binary = os.environ.get("GPUSCOUT_BINARY") or str(REPO / "target" / "debug" / "gpuscout")
    if not os.path.exists(binary):
        pytest.fail(f"no gpuscout binary at {binary}: set GPUSCOUT_BINARY (cargo test sets it)")
    for t in ("buildah", "debootstrap"):
        tool(t)
    r = subprocess.run(["bash", str(REPO / "scripts" / "build-image.sh"), "--binary", binary],
                       capture_output=True, text=True, timeout=1800)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical to the host run" in r.stdout
    m = re.search(r"size (\S+ \S+) \(OCI archive", r.stdout)
    assert m, r.stdout


def ignored_by_containerignore(path: str, patterns: list[str]) -> bool:
    """Docker/buildah ignore-file semantics, enough for our file: later patterns win, `!`
    re-includes, a pattern matches the path or any of its parent directories."""
    import fnmatch

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.rstrip("/")
        pat = pat[3:] if pat.startswith("**/") else pat
        if any(fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p.split("/")[-1], pat) and "/" not in pat
               for p in prefixes):
            ignored = not neg
    return ignored


def test_build_stage_context_has_every_file_cargo_needs():
    """The Rust stage copies the build context; cargo's own file list (what `cargo package`
    would build from) must survive .containerignore, while target/ and .git/ must not."""
    patterns = [line.strip() for line in (REPO / ".containerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    r = subprocess.run(["cargo", "package", "--list", "--allow-dirty", "--offline"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = [f for f in r.stdout.splitlines() if f and f not in (".cargo_vcs_info.json", "Cargo.toml.orig")]
    assert "Cargo.lock" in files and "Cargo.toml" in files and any(f.startswith("agent/src/") for f in files)
    if (REPO / "build.rs").exists():
        assert "build.rs" in files
    dropped = [f for f in files if ignored_by_containerignore(f, patterns)]
    assert dropped == [], f".containerignore drops files cargo builds from: {dropped}"
    for f in ("target/debug/gpuscout", ".git/HEAD", ".venv/bin/python", "tests/deploy/__pycache__/x.pyc"):
        assert ignored_by_containerignore(f, patterns), f
    assert not ignored_by_containerignore("target/release/gpuscout", patterns)
