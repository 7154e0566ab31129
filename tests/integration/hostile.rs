//! Bad input: garbage bytes, empty files, a 100 MB file, unreadable files, dangling links, a
//! symlink loop and a device that vanishes between listing and reading. Discovery must return
//! what it could read, record what it could not, never panic and never report an unread value
//! as 0.

#![allow(clippy::disallowed_methods)]

use crate::util::{report, report_at};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

#[test]
fn committed_garbage_tree() {
    let r = report("dangling-and-garbage");
    assert_eq!(
        r.gpus.len(),
        1,
        "the dangling 0000:0b:00.0 is not a GPU we can describe"
    );
    let g = &r.gpus[0];
    assert_eq!(
        g.memory_bytes, None,
        "empty mem_info_vram_total must be absent, not 0"
    );
    assert!(
        g.unread
            .iter()
            .any(|u| u.path.ends_with("mem_info_vram_total")),
        "{:?}",
        g.unread
    );
    assert!(
        r.host
            .unread
            .iter()
            .any(|u| u.path.ends_with("0000:0b:00.0")),
        "the vanished device is recorded: {:?}",
        r.host.unread
    );
    let amd = g.amd.as_ref().unwrap();
    assert_eq!(
        amd.cu_count, None,
        "truncated KFD properties give no CU count"
    );
}

fn write(p: &Path, s: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// A GPU whose every attribute is broken in a different way.
fn hostile_tree(root: &Path) {
    let dev = root.join("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0");
    write(&dev.join("vendor"), b"0x1002\n");
    write(&dev.join("device"), b"0x744c\n");
    write(&dev.join("class"), b"0x030000\n");
    write(&dev.join("revision"), b"\xff\xfe\x00garbage");
    write(&dev.join("numa_node"), b"");
    write(&dev.join("current_link_width"), b"-16\n");
    // A 100 MB attribute: read capped, rejected as malformed, no 100 MB allocation.
    let big = fs::File::create(dev.join("mem_info_vram_total")).unwrap();
    big.set_len(100 * 1024 * 1024).unwrap();
    // A directory where a file belongs: unreadable even for root.
    fs::create_dir_all(dev.join("max_link_width")).unwrap();
    // A FIFO must not block the reader.
    let fifo = dev.join("subsystem_vendor");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // Dangling driver link and a symlink loop for the DRM directory.
    symlink("../../../../bus/pci/drivers/gone", dev.join("driver")).unwrap();
    symlink("drm", dev.join("drm_loop")).unwrap();
    symlink("drm_loop", dev.join("drm")).unwrap();
    fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
    symlink(
        "../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0",
        root.join("sys/bus/pci/devices/0000:01:00.0"),
    )
    .unwrap();
    // Listed, but its directory vanished (hot unplug between readdir and read).
    symlink(
        "../../../devices/pci0000:00/0000:00:02.0/0000:02:00.0",
        root.join("sys/bus/pci/devices/0000:02:00.0"),
    )
    .unwrap();
    // Listed, vendor readable, class garbage: cannot be classified.
    let odd = root.join("sys/devices/pci0000:00/0000:00:03.0/0000:03:00.0");
    write(&odd.join("vendor"), b"0x10de\n");
    write(&odd.join("class"), b"\x00\x01\x02");
    symlink(
        "../../../devices/pci0000:00/0000:00:03.0/0000:03:00.0",
        root.join("sys/bus/pci/devices/0000:03:00.0"),
    )
    .unwrap();
    // Host files: garbage os-release, a loop for proc/modules, binary extensions.yaml.
    write(&root.join("etc/os-release"), b"\xff\xff\xff");
    fs::create_dir_all(root.join("proc")).unwrap();
    symlink("modules", root.join("proc/modules")).unwrap();
    write(&root.join("proc/sys/kernel/osrelease"), b"");
    // KFD node with garbage properties.
    write(
        &root.join("sys/class/kfd/kfd/topology/nodes/1/properties"),
        b"simd_count banana\nlocation_id 256\n",
    );
}

#[test]
fn hostile_tree_never_panics_and_never_invents_values() {
    let t = tempfile::tempdir().unwrap();
    hostile_tree(t.path());
    let r = report_at(t.path());
    assert_eq!(r.gpus.len(), 1, "{:?}", r.gpus);
    let g = &r.gpus[0];
    assert_eq!(g.memory_bytes, None);
    assert_eq!(g.numa_node, None);
    assert_eq!(g.revision, None);
    assert_eq!(g.pcie.current_width, None, "-16 is not a width");
    assert_eq!(g.pcie.max_width, None);
    assert_eq!(g.subsystem_vendor_id, None, "FIFO refused without blocking");
    assert_eq!(
        g.driver.as_deref(),
        Some("gone"),
        "the link names the driver even if dangling"
    );
    assert_eq!((g.card.as_deref(), g.render.as_deref()), (None, None));
    let amd = g.amd.as_ref().unwrap();
    assert_eq!((amd.cu_count, amd.vram_bytes), (None, None));
    let unread: Vec<&str> = g.unread.iter().map(|u| u.path.as_str()).collect();
    for f in [
        "revision",
        "numa_node",
        "mem_info_vram_total",
        "max_link_width",
        "subsystem_vendor",
        "drm",
    ] {
        assert!(
            unread.iter().any(|p| p.ends_with(f)),
            "{f} not recorded in {unread:?}"
        );
    }
    let host_unread: Vec<&str> = r.host.unread.iter().map(|u| u.path.as_str()).collect();
    for f in [
        "0000:02:00.0",
        "0000:03:00.0/class",
        "etc/os-release",
        "proc/modules",
    ] {
        assert!(
            host_unread.iter().any(|p| p.ends_with(f)),
            "{f} not in {host_unread:?}"
        );
    }
    assert_eq!(r.host.kernel, None);
    assert_eq!(r.host.os, None);
}

#[test]
fn unreadable_file_for_non_root_readers() {
    // Permission bits do not stop root; the test still proves the error path when they do.
    let t = tempfile::tempdir().unwrap();
    hostile_tree(t.path());
    let dev = t
        .path()
        .join("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0");
    write(&dev.join("numa_node"), b"0\n");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dev.join("numa_node"), fs::Permissions::from_mode(0o000)).unwrap();
    let r = report_at(t.path());
    let is_root = unsafe_free_is_root();
    if is_root {
        assert_eq!(r.gpus[0].numa_node, Some(0));
    } else {
        assert_eq!(r.gpus[0].numa_node, None);
        assert!(
            r.gpus[0]
                .unread
                .iter()
                .any(|u| u.error.contains("permission"))
        );
    }
}

fn unsafe_free_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}
