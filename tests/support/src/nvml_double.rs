//! Builds the NVML test double (`tests/nvml-double/nvml_double.c`) with the system C compiler
//! and hands out per-test copies of it, each in its own directory with its own
//! `nvml_double.conf` (the double reads its script from the directory it was loaded from).
//! Used by the integration tests and the NVML bench.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../nvml-double/nvml_double.c");

/// Compile the double once per process. Panics with the reason when `cc` is missing or fails:
/// the NVML tests cannot run without it.
fn built() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        // Next to the test or bench binary (target/<profile>/deps), so it stays under target/.
        let exe = std::env::current_exe().expect("the test binary's path");
        let dir = exe
            .parent()
            .unwrap_or(Path::new("."))
            .join("nvml-double")
            .join(std::process::id().to_string());
        fs::create_dir_all(&dir).expect("create the NVML double build directory");
        let out = dir.join("libnvml_double.so");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(SOURCE)
            .status()
            .unwrap_or_else(|e| {
                panic!("the NVML tests need a C compiler: running `{cc}` failed: {e} (install gcc / build-essential)")
            });
        assert!(status.success(), "`{cc}` could not build {SOURCE}: {status}");
        out
    })
}

/// One copy of the double in its own directory, scripted by `conf`.
pub struct Double {
    pub dir: tempfile::TempDir,
    pub lib: PathBuf,
}

impl Double {
    /// A fresh copy in a new temporary directory, named like the real library.
    pub fn new(conf: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = dir.path().join("libnvidia-ml.so.1");
        fs::copy(built(), &lib).expect("copy the NVML double");
        fs::write(dir.path().join("nvml_double.conf"), conf).expect("write nvml_double.conf");
        Self { dir, lib }
    }

    /// Install a copy at `path` (e.g. inside a host root), scripted by `conf` next to it.
    pub fn install_at(path: &Path, conf: &str) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::copy(built(), path).expect("copy the NVML double");
        fs::write(path.with_file_name("nvml_double.conf"), conf).expect("write conf");
    }

    /// Let every hanging call return.
    pub fn release(&self) {
        fs::write(self.dir.path().join("release"), "").expect("write release");
    }

    /// How often `nvmlInit*` was called.
    pub fn init_attempts(&self) -> u32 {
        self.counter("init_attempts")
    }

    fn counter(&self, name: &str) -> u32 {
        fs::read_to_string(self.dir.path().join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Create the file `name` next to the library (the double's `xid_gate`).
    pub fn touch(&self, name: &str) {
        fs::write(self.dir.path().join(name), "").expect("write gate file");
    }

    /// Every NVML call made so far, in order (a hung call that returned adds `<sym> returned`).
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        // A test that left a call hanging must not leave its thread spinning forever.
        let _ = fs::write(self.dir.path().join("release"), "");
    }
}

/// A fully populated GeForce-like GPU `i` for the double's config. A GeForce has no ECC, so its
/// ECC counters answer NOT_SUPPORTED (no `ecc_mode`), as real NVML does.
pub fn full_gpu(i: u32, bus_id: &str, name: &str, uuid: &str) -> String {
    format!(
        "gpu.{i}.bus_id={bus_id}\ngpu.{i}.name={name}\ngpu.{i}.uuid={uuid}\n\
         gpu.{i}.pci_device_id=0x268410de\ngpu.{i}.mem_total=25757220864\ngpu.{i}.mem_used=1073741824\n\
         gpu.{i}.util_gpu=37\ngpu.{i}.util_mem=12\ngpu.{i}.temp=54\ngpu.{i}.power_mw=123456\n\
         gpu.{i}.power_limit_mw=450000\ngpu.{i}.enforced_limit_mw=450000\ngpu.{i}.energy_mj=987654321\n\
         gpu.{i}.clock_graphics=2520\ngpu.{i}.clock_sm=2520\ngpu.{i}.clock_mem=10501\n\
         gpu.{i}.max_clock_graphics=3120\ngpu.{i}.max_clock_sm=3120\ngpu.{i}.max_clock_mem=10501\n\
         gpu.{i}.cc=8.9\ngpu.{i}.arch=8\ngpu.{i}.mig_current=0\n\
         gpu.{i}.pcie_gen=1\ngpu.{i}.pcie_width=16\n\
         gpu.{i}.pcie_max_gen=4\ngpu.{i}.pcie_max_width=16\n"
    )
}
