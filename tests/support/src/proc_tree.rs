//! Writes a large synthetic `/proc` below a temporary host root, for the per-process scan's
//! scale test and its bench: `processes` processes with `fds_per_process` fds each, every
//! `drm_every`-th process holding one DRM fd (amdgpu fdinfo, the format of
//! tests/fixtures/pods/mkpods.py) and the rest sockets, pipes and files, as real `/proc/<pid>/fd`
//! symlinks with an fdinfo file per fd.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

pub const GPU: &str = "0000:03:00.0";

/// The amdgpu fdinfo of client `id`.
pub fn amdgpu_fdinfo(id: u64, gfx_ns: u64) -> String {
    format!(
        "pos:\t0\nflags:\t02100002\nmnt_id:\t26\nino:\t{}\ndrm-driver:\tamdgpu\ndrm-client-id:\t{id}\n\
drm-pdev:\t{GPU}\npasid:\t{}\ndrm-total-vram:\t64 MiB\ndrm-shared-vram:\t0\ndrm-resident-vram:\t64 MiB\n\
drm-purgeable-vram:\t0\ndrm-memory-vram:\t65536 KiB\ndrm-engine-gfx:\t{gfx_ns} ns\n",
        5000 + id,
        32768 + id
    )
}

/// Write the tree; returns the number of DRM processes.
pub fn write(root: &Path, processes: u32, fds_per_process: u32, drm_every: u32) -> u32 {
    let mut drm = 0;
    for i in 0..processes {
        let pid = 1000 + i;
        let d = root.join(format!("proc/{pid}"));
        fs::create_dir_all(d.join("fd")).unwrap();
        fs::create_dir_all(d.join("fdinfo")).unwrap();
        fs::write(
            d.join("cgroup"),
            format!(
                "0::/kubepods/besteffort/pod{:08x}-0000-4000-8000-000000000000/{:064x}\n",
                i, i
            ),
        )
        .unwrap();
        let has_drm = drm_every > 0 && i % drm_every == 0;
        for fd in 0..fds_per_process {
            let target = match fd {
                _ if has_drm && fd == fds_per_process - 1 => "/dev/dri/renderD128".to_owned(),
                0 => "/dev/null".to_owned(),
                1 | 2 => format!("pipe:[{}]", 40000 + i),
                _ if fd % 3 == 0 => format!("socket:[{}]", 100000 + i * 64 + fd),
                _ => format!("/var/lib/app/data-{fd}.db"),
            };
            symlink(&target, d.join("fd").join(fd.to_string())).unwrap();
            let info = if target.starts_with("/dev/dri/") {
                amdgpu_fdinfo(u64::from(i), 1_000_000 * u64::from(i))
            } else {
                format!(
                    "pos:\t0\nflags:\t02\nmnt_id:\t24\nino:\t{}\n",
                    700000 + i * 64 + fd
                )
            };
            fs::write(d.join("fdinfo").join(fd.to_string()), info).unwrap();
        }
        if has_drm {
            drm += 1;
        }
    }
    drm
}
