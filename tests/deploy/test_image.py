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
