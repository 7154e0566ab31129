//! Node labels (`docs/reference/labels.md`): a pure function from the host facts and the GPU list
//! to the label map.
//!
//! No I/O here: every input comes from the [`Host`] and [`Gpu`]s discovery built. A fact that
//! discovery could not read (`None`) gives no label; it never becomes a guessed, partial or `0`
//! value. No label carries a timestamp or anything else that changes while the hardware does not,
//! so the Node is only written when something real changed.
//!
//! # Label set
//!
//! Keys are `<prefix>/<name>`; the prefix is `gpuscout.io` unless `--label-prefix` says otherwise
//! (checked by [`validate_prefix`]). `V` is `amd`, `nvidia` or `intel`; the `V.*` keys exist only
//! for vendors with at least one GPU on the node.
//!
//! | key | example | meaning |
//! |---|---|---|
//! | `present` | `true` | at least one GPU was found (absent otherwise) |
//! | `talos.version` | `v1.11.5` | Talos version; Talos nodes only, with or without GPUs |
//! | `V.count` | `2` | GPUs of V (every GPU PCI function: unbound ones and SR-IOV VFs included) |
//! | `V.ready` | `true` | `true` when every GPU of V has status `ok`, else `false` |
//! | `V.status` | `driver-not-bound` | the worst verdict among V's GPUs (`docs/reference/verdicts.md` order) |
//! | `V.product` | `GeForce-RTX-4090` | sanitised model name; `mixed` when V's GPUs differ |
//! | `V.product.<model>` | `1` | only with `V.product=mixed`: GPUs per sanitised model |
//! | `V.memory-mib` | `24564` | smallest VRAM of V's GPUs in MiB; only when every size is known |
//! | `V.driver` | `amdgpu` | driver bound to V's GPUs; `mixed` when they use different ones |
//! | `V.driver.<driver>` | `1` | only with `V.driver=mixed`: GPUs per bound driver |
//! | `V.driver-version` | `550.127.05` | version of that driver (see below); `mixed` when they differ |
//! | `amd.gfx` | `gfx1151` | compiler target from KFD |
//! | `amd.family` | `GC_11_5_0` | the kernel's `AMDGPU_FAMILY_*` name (ROCm's node labeller uses the same names) |
//! | `amd.cu-count` | `40` | smallest compute-unit count of the AMD GPUs |
//! | `amd.gtt-mib` | `63756` | GTT (system RAM the GPU may map) in MiB; only when every AMD GPU is an APU |
//! | `nvidia.compute-capability` | `8.9` | CUDA compute capability (NVML only) |
//! | `nvidia.cuda-driver` | `12.8` | CUDA driver API version (NVML only) |
//! | `nvidia.family` | `ada` | architecture (NVML only) |
//! | `nvidia.mig` | `enabled` | `enabled` or `disabled` (NVML only) |
//! | `intel.arch` | `xe2` | architecture from the PCI device id |
//!
//! Where the GPUs of one vendor disagree:
//! - A text value (`product`, `driver`, `driver-version`, `amd.gfx`, `amd.family`, the
//!   `nvidia.*` extras, `intel.arch`) is written when every GPU of V has the same known value,
//!   `mixed` when two known values differ, and left out when only some GPUs' values are known
//!   (the one value seen might not hold for the others).
//! - A size (`memory-mib`, `amd.cu-count`, `amd.gtt-mib`) is the smallest across V's GPUs, so it
//!   reads "every GPU of V has at least this much" and still works with `Gt`/`Lt` node affinity.
//!   It is written only when every GPU's size is known: the minimum of the known sizes could be
//!   larger than an unknown one, and the label would then promise memory a GPU may not have.
//! - `driver` looks at bound GPUs only (an unbound GPU shows in `ready`/`status`). Intel nodes
//!   with one GPU on `i915` and another on `xe` get `intel.driver=mixed`,
//!   `intel.driver.i915=1`, `intel.driver.xe=1`; both are in-tree, so `intel.driver-version` is
//!   the kernel release.
//! - `driver-version` of a bound GPU: NVIDIA's kernel module version (`/proc/driver/nvidia/version`),
//!   else `/sys/module/<driver>/version` (DKMS builds), else, for the in-tree drivers `amdgpu`,
//!   `radeon`, `i915`, `xe` and `nouveau` (which have no `version` file), the kernel release,
//!   because the driver is part of the kernel (docs/research/sysfs-and-vendor-libs.md §6). Other
//!   drivers (`vfio-pci`) have no known version, so the label is left out.
//!
//! # Sanitising
//!
//! Label values and the `<model>`/`<driver>` parts of key names keep `[A-Za-z0-9._-]`; `™`, `®`
//! and `©` are dropped; every other character (spaces, `/`, `(`, non-ASCII letters) becomes `-`
//! (`_` in the `amd-labeller` profile, as that tool writes); runs of the separator collapse to
//! one, and non-alphanumerics are trimmed from both ends. `Radeon™ 780M (Phoenix) / ÄÖ` becomes
//! `Radeon-780M-Phoenix`, `NVIDIA TITAN X (Pascal)` becomes `NVIDIA-TITAN-X-Pascal` (what GPU
//! Feature Discovery writes). A result longer than the limit (63 for a value; for a key name part,
//! what is left of the 63-character name) is cut and ends in `-` plus the first 8 hex digits of
//! the SHA-256 of the whole sanitised string, so two long names that differ only at the end stay
//! distinct. A value that is empty after this (empty, blank or only symbols) is left out.
//!
//! # Compat profiles (each off by default)
//!
//! | profile | keys (example values) |
//! |---|---|
//! | `nvidia-gfd` | `nvidia.com/gpu.present=true`, `gpu.count=2`, `gpu.product=NVIDIA-GeForce-RTX-4090`, `gpu.memory=24564` (MiB), `gpu.family=ada-lovelace`, `gpu.compute.major=8`, `gpu.compute.minor=9`, `gpu.mode=graphics\|compute\|unknown`, `cuda.driver-version.{major,minor,revision,full}=550/127/05/550.127.05`, `cuda.driver.{major,minor,rev}` (deprecated), `cuda.runtime-version.{major,minor,full}=12/8/12.8`, `cuda.runtime.{major,minor}` (deprecated), `mig.capable=true\|false` |
//! | `amd-labeller` | `amd.com/gpu.family=GC_11_5_0`, `gpu.cu-count=40`, `gpu.simd-count=80`, `gpu.device-id=1586`, `gpu.product-name=AMD_Radeon_RX_9070_XT`, `gpu.vram=192G`, `gpu.driver-version=6.8.5`, `gpu.driver-src-version=5D8A…`, `gpu.compute-memory-partition=cpx_nps1`; with differing values `amd.com/gpu.<kind>.<value>=<count>` instead |
//! | `intel-nfd` | `intel.feature.node.kubernetes.io/gpu=true`, `gpu.intel.com/device-id.0300-56a0.present=true`, `gpu.intel.com/device-id.0300-56a0.count=1`, `gpu.intel.com/product=Flex_170`, `gpu.intel.com/device.count=1`, `gpu.intel.com/family=A_Series` |
//!
//! Sources, checked key by key: GFD is NVIDIA/k8s-device-plugin `internal/lm/` (`resource.go`,
//! `nvml.go`) @ 1b826acc6af3; the AMD labeller is ROCm/k8s-device-plugin
//! `cmd/k8s-node-labeller/main.go` and `internal/pkg/amdgpu/amdgpu.go` @ ed7646843003; the Intel
//! rules are intel/intel-device-plugins-for-kubernetes `deployments/nfd/overlays/
//! node-feature-rules/{node-feature-rules,platform-labeling-rules}.yaml` @ 94a91bc94134.
//!
//! Differences from the tools they mimic, all on purpose:
//! - GFD sees the GPUs NVML sees: only GPUs bound to `nvidia` count, and with none (driver
//!   absent or every GPU on `vfio-pci`) no `nvidia.com/*` key is written, as GFD writes none when
//!   NVML cannot start. The revision keys are left out for a two-part driver version (GFD
//!   writes them empty). `gpu.present` is not GFD's own key but the one the device plugin chart
//!   and the GPU operator select on. `gpu.product` is GFD's sanitised NVML name (characters
//!   outside `[A-Za-z0-9-_. ]` dropped, blanks to `-`), left out when the models differ (GFD
//!   keeps one of them). `gpu.family` follows GFD's compute-capability table (10 and 12 are
//!   `blackwell`, 13 `rubin`). `gpu.mode` is `unknown` when the GPUs' PCI classes differ.
//!   `mig.capable` is `true` when NVML answered the MIG mode query for some GPU, `false` when
//!   NVML answered for every GPU (it has a compute capability) and none supports MIG, and left
//!   out when NVML did not answer (GFD would not run). Not written: `gpu.machine` (DMI),
//!   `gpu.replicas`, `gpu.sharing-strategy`, `mps.capable`, `mig.strategy` (device-plugin
//!   configuration, not hardware facts), the MIG profile keys, and never `gfd.timestamp`.
//! - AMD labeller: it counts each compute partition as a GPU, so `cu-count` and `simd-count` are
//!   per partition (an MI300X in CPX mode gives 38 and 152); `vram` is the KFD node's
//!   `mem_banks/0` `size_in_bytes` in MiB, rounded to GiB (left out without KFD); `family` is the
//!   kernel's `AMDGPU_FAMILY_*` name and left out for families the labeller cannot name
//!   (`GC_11_5_4`); `product-name` is the FRU `product_name`, else libdrm's `amdgpu.ids` name,
//!   never a pci.ids name; `driver-version` and `driver-src-version` are the `amdgpu` module's
//!   `version` and `srcversion`, left out when absent (the labeller writes them empty). The
//!   `<kind>.<value>=<count>` keys count PCI GPUs, not partitions. Not written: the
//!   `beta.amd.com/*` copies, `gpu.firmware`, `gpu.compute-partitioning-supported`,
//!   `gpu.memory-partitioning-supported`.
//! - Intel NFD rules: `gpu=true` needs an Intel GPU of class 0300/0380 and a live or built-in
//!   `i915` or `xe` module; the `.count` key is named after the first such GPU's device id and
//!   counts all of that class, as the upstream template does; the product/family rules run in
//!   the file's order, a later one's label winning.

use crate::model::{Gpu, Host, ModelSource, Status, Vendor};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Default label prefix.
pub const DEFAULT_PREFIX: &str = "gpuscout.io";

/// Longest label value and longest key name (the part after `/`).
pub const MAX_LEN: usize = 63;

/// Hex digits of the SHA-256 that end a truncated value.
const HASH_HEX: usize = 8;

const MIB: u64 = 1024 * 1024;

/// Drivers that ship in the kernel tree and have no `/sys/module/<m>/version`: their version is
/// the kernel release.
const IN_TREE_DRIVERS: &[&str] = &["amdgpu", "radeon", "i915", "xe", "nouveau"];

/// Optional label profiles that mimic other tools' keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompatProfiles {
    pub nvidia_gfd: bool,
    pub amd_labeller: bool,
    pub intel_nfd: bool,
}

/// How to build labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelConfig {
    /// Key prefix; the caller checks it with [`validate_prefix`].
    pub prefix: String,
    pub compat: CompatProfiles,
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            compat: CompatProfiles::default(),
        }
    }
}

/// The labels this node should carry (see the module docs for the full set).
pub fn compute(host: &Host, gpus: &[Gpu], cfg: &LabelConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let p = cfg.prefix.as_str();
    if !gpus.is_empty() {
        out.insert(format!("{p}/present"), "true".to_owned());
    }
    if let Some(t) = &host.talos {
        put(&mut out, format!("{p}/talos.version"), &t.version);
    }
    for v in Vendor::ALL {
        let of_v: Vec<&Gpu> = gpus.iter().filter(|g| g.vendor == v).collect();
        if of_v.is_empty() {
            continue;
        }
        vendor_labels(&mut out, p, v, &of_v, host);
        match v {
            Vendor::Amd => {
                amd_extras(&mut out, p, &of_v);
                if cfg.compat.amd_labeller {
                    amd_labeller(&mut out, &of_v, host);
                }
            }
            Vendor::Nvidia => {
                nvidia_extras(&mut out, p, &of_v);
                if cfg.compat.nvidia_gfd {
                    nvidia_gfd(&mut out, &of_v, host);
                }
            }
            Vendor::Intel => {
                intel_extras(&mut out, p, &of_v);
                if cfg.compat.intel_nfd {
                    intel_nfd(&mut out, &of_v, host);
                }
            }
        }
    }
    out
}

/// Check a label prefix: a lowercase DNS subdomain of at most 253 characters, and not one of the
/// domains Kubernetes reserves for its own components (`kubernetes.io`, `k8s.io`).
pub fn validate_prefix(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    let ok = p.split('.').all(|part| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    if !ok {
        return Err("must be a lowercase DNS subdomain such as gpuscout.io".into());
    }
    let reserved = ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|r| p == *r || p.ends_with(&format!(".{r}")));
    if reserved {
        return Err("kubernetes.io and k8s.io are reserved for Kubernetes components".into());
    }
    Ok(())
}

/// `raw` as a label value (invalid characters become `-`), or `None` when nothing valid is left.
pub fn sanitize_value(raw: &str) -> Option<String> {
    sanitize(raw, MAX_LEN, '-')
}

/// Make `raw` valid label syntax of at most `max` characters (module docs, "Sanitising"), with
/// `sep` for invalid characters. `None` when nothing valid is left.
///
/// The hash of a truncated result is taken over the whole sanitised string, not the raw one, so
/// the result depends only on the sanitised form: two names that sanitise alike (`A/B`, `A B`)
/// give the same label whether or not they are long, and names that differ in any kept
/// character, however far in, give different ones.
fn sanitize(raw: &str, max: usize, sep: char) -> Option<String> {
    let mut s = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else if matches!(c, '™' | '®' | '©') {
            continue;
        } else {
            sep
        };
        if c == sep && s.ends_with(sep) {
            continue;
        }
        s.push(c);
    }
    let s = trim_non_alnum(&s);
    if s.is_empty() {
        return None;
    }
    if s.len() <= max {
        return Some(s.to_owned());
    }
    let keep = max.checked_sub(HASH_HEX + 1).filter(|k| *k > 0)?;
    // `s` is ASCII by now, so any byte index is a character boundary.
    let head = trim_non_alnum(&s[..keep]);
    Some(format!("{head}-{}", short_hash(s)))
}

fn trim_non_alnum(s: &str) -> &str {
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
}

fn short_hash(raw: &str) -> String {
    let d = Sha256::digest(raw.as_bytes());
    d.iter()
        .take(HASH_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Insert `key` with `raw` sanitised; nothing when the value cannot be made valid.
fn put(out: &mut BTreeMap<String, String>, key: String, raw: &str) {
    if let Some(v) = sanitize_value(raw) {
        out.insert(key, v);
    }
}

/// What the GPUs of one vendor say about one text fact.
#[derive(Debug, PartialEq, Eq)]
enum Agreement<T> {
    /// Every GPU has this value.
    All(T),
    /// At least two different known values.
    Mixed,
    /// No value, or one value that only some GPUs are known to have.
    Unknown,
}

fn agree<T: Ord>(values: impl IntoIterator<Item = Option<T>>) -> Agreement<T> {
    let mut all_known = true;
    let mut seen = BTreeSet::new();
    for v in values {
        match v {
            Some(v) => {
                seen.insert(v);
            }
            None => all_known = false,
        }
    }
    if seen.len() > 1 {
        return Agreement::Mixed;
    }
    match seen.into_iter().next() {
        Some(v) if all_known => Agreement::All(v),
        _ => Agreement::Unknown,
    }
}

/// Write an [`Agreement`]: the value, `mixed`, or nothing.
fn put_agreed(out: &mut BTreeMap<String, String>, key: String, a: Agreement<String>) {
    match a {
        Agreement::All(v) => put(out, key, &v),
        Agreement::Mixed => {
            out.insert(key, "mixed".to_owned());
        }
        Agreement::Unknown => {}
    }
}

/// The smallest value, only when every GPU's value is known (a `0` counts as unknown: no GPU has
/// zero memory or compute units, so it can only be a failed read).
fn min_all(values: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    values
        .into_iter()
        .map(|v| v.filter(|n| *n > 0))
        .collect::<Option<Vec<u64>>>()?
        .into_iter()
        .min()
}

/// Add `n` GPUs under the key `<base>.<sanitised part>`; the part gets what is left of the
/// 63-character name after `<base>.`. Counts of parts that sanitise alike are added up.
fn count_key(
    counts: &mut BTreeMap<String, usize>,
    base: &str,
    raw_part: &str,
    sep: char,
    n: usize,
) {
    let room = MAX_LEN.saturating_sub(base.len() + 1);
    if let Some(part) = sanitize(raw_part, room, sep) {
        *counts.entry(format!("{base}.{part}")).or_default() += n;
    }
}

fn vendor_labels(
    out: &mut BTreeMap<String, String>,
    p: &str,
    v: Vendor,
    gpus: &[&Gpu],
    host: &Host,
) {
    let key = |name: &str| format!("{p}/{v}.{name}");
    out.insert(key("count"), gpus.len().to_string());
    let worst = gpus
        .iter()
        .map(|g| g.status)
        .max()
        .unwrap_or(Status::Unknown);
    out.insert(key("ready"), (worst == Status::Ok).to_string());
    out.insert(key("status"), worst.as_str().to_owned());

    // Product: one sanitised name, or `mixed` plus a count per model.
    let mut by_model: BTreeMap<&str, usize> = BTreeMap::new();
    for g in gpus {
        *by_model.entry(g.model.as_str()).or_default() += 1;
    }
    let shown: BTreeSet<Option<String>> = by_model.keys().map(|m| sanitize_value(m)).collect();
    if shown.len() == 1 {
        if let Some(Some(model)) = shown.into_iter().next() {
            out.insert(key("product"), model);
        }
    } else {
        out.insert(key("product"), "mixed".to_owned());
        let mut counts = BTreeMap::new();
        for (model, n) in by_model {
            count_key(&mut counts, &format!("{v}.product"), model, '-', n);
        }
        for (name, n) in counts {
            out.insert(format!("{p}/{name}"), n.to_string());
        }
    }

    if let Some(min) = min_all(gpus.iter().map(|g| g.memory_bytes)) {
        out.insert(key("memory-mib"), (min / MIB).to_string());
    }

    // Driver: bound GPUs only.
    let mut by_driver: BTreeMap<&str, usize> = BTreeMap::new();
    for d in gpus.iter().filter_map(|g| g.driver.as_deref()) {
        *by_driver.entry(d).or_default() += 1;
    }
    match by_driver.len() {
        0 => {}
        1 => {
            if let Some(d) = by_driver.keys().next() {
                put(out, key("driver"), d);
            }
        }
        _ => {
            out.insert(key("driver"), "mixed".to_owned());
            let mut counts = BTreeMap::new();
            for (d, n) in by_driver {
                count_key(&mut counts, &format!("{v}.driver"), d, '-', n);
            }
            for (name, n) in counts {
                out.insert(format!("{p}/{name}"), n.to_string());
            }
        }
    }
    let bound = gpus.iter().filter(|g| g.driver.is_some());
    put_agreed(
        out,
        key("driver-version"),
        agree(bound.map(|g| driver_version(host, g))),
    );
}

/// The version of the driver bound to `g` (module docs, "driver-version").
fn driver_version(host: &Host, g: &Gpu) -> Option<String> {
    let driver = g.driver.as_deref()?;
    if driver == "nvidia"
        && let Some(v) = g
            .nvidia
            .as_ref()
            .and_then(|n| n.kernel_module_version.clone())
    {
        return Some(v);
    }
    if let Some(v) = module_version(host, driver) {
        return Some(v);
    }
    if IN_TREE_DRIVERS.contains(&driver) {
        return host.kernel.clone();
    }
    None
}

/// `version` of a kernel module; a driver name's `-` is `_` in the module name (`vfio-pci`).
fn module_version(host: &Host, driver: &str) -> Option<String> {
    let name = driver.replace('-', "_");
    host.modules
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.version.clone())
        .filter(|v| !v.trim().is_empty())
}

fn amd_extras(out: &mut BTreeMap<String, String>, p: &str, gpus: &[&Gpu]) {
    let info = |g: &&Gpu| g.amd.clone().unwrap_or_default();
    put_agreed(
        out,
        format!("{p}/amd.gfx"),
        agree(gpus.iter().map(|g| info(g).gfx_target)),
    );
    put_agreed(
        out,
        format!("{p}/amd.family"),
        agree(gpus.iter().map(|g| info(g).family)),
    );
    if let Some(cu) = min_all(gpus.iter().map(|g| info(g).cu_count.map(u64::from))) {
        out.insert(format!("{p}/amd.cu-count"), cu.to_string());
    }
    let all_apus = gpus.iter().all(|g| info(g).apu == Some(true));
    if all_apus && let Some(gtt) = min_all(gpus.iter().map(|g| info(g).gtt_bytes)) {
        out.insert(format!("{p}/amd.gtt-mib"), (gtt / MIB).to_string());
    }
}

fn nvidia_extras(out: &mut BTreeMap<String, String>, p: &str, gpus: &[&Gpu]) {
    let info = |g: &&Gpu| g.nvidia.clone().unwrap_or_default();
    put_agreed(
        out,
        format!("{p}/nvidia.compute-capability"),
        agree(gpus.iter().map(|g| info(g).compute_capability)),
    );
    put_agreed(
        out,
        format!("{p}/nvidia.cuda-driver"),
        agree(gpus.iter().map(|g| info(g).cuda_driver_version)),
    );
    put_agreed(
        out,
        format!("{p}/nvidia.family"),
        agree(gpus.iter().map(|g| info(g).family)),
    );
    let mig = |on: bool| if on { "enabled" } else { "disabled" }.to_owned();
    put_agreed(
        out,
        format!("{p}/nvidia.mig"),
        agree(gpus.iter().map(|g| info(g).mig_enabled.map(mig))),
    );
}

fn intel_extras(out: &mut BTreeMap<String, String>, p: &str, gpus: &[&Gpu]) {
    put_agreed(
        out,
        format!("{p}/intel.arch"),
        agree(
            gpus.iter()
                .map(|g| g.intel.as_ref().and_then(|i| i.arch.clone())),
        ),
    );
}

/// `X.Y[.Z]` split into numbers-as-text, like GFD does; `None` for other shapes.
fn version_parts(v: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = v.trim().split('.').collect();
    let numeric = parts
        .iter()
        .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    ((2..=3).contains(&parts.len()) && numeric).then_some(parts)
}

/// GPU Feature Discovery's `getArchFamily` (compute capability to family), as in
/// NVIDIA/k8s-device-plugin `internal/lm/resource.go` @ 1b826acc6af3 (2026-08-19).
fn gfd_family(major: u32, minor: u32) -> &'static str {
    match (major, minor) {
        (1, _) => "tesla",
        (2, _) => "fermi",
        (3, _) => "kepler",
        (5, _) => "maxwell",
        (6, _) => "pascal",
        (7, m) if m < 5 => "volta",
        (7, _) => "turing",
        (8, m) if m < 9 => "ampere",
        (8, _) => "ada-lovelace",
        (9, _) => "hopper",
        // "The Blackwell GPU family is bifurcated into two cuda compute capabilities 10.0 and 12.0"
        (10 | 12, _) => "blackwell",
        (13, _) => "rubin",
        _ => "undefined",
    }
}

/// GFD's `sanitise` of a product name: characters other than `[A-Za-z0-9-_. ]` are dropped and
/// runs of blanks become one `-` (`NVIDIA TITAN X (Pascal)` gives `NVIDIA-TITAN-X-Pascal`).
/// Then cut to a valid label value like every other value.
fn gfd_product(model: &str) -> Option<String> {
    let kept: String = model
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        .collect();
    sanitize_value(&kept.split_whitespace().collect::<Vec<_>>().join("-"))
}

/// The `nvidia.com/*` keys NVIDIA GPU Feature Discovery writes (module docs, compat profiles).
/// GFD sees the GPUs NVML sees, those bound to `nvidia`; with none (no driver) it writes no
/// `nvidia.com/*` key, and neither does this.
fn nvidia_gfd(out: &mut BTreeMap<String, String>, all: &[&Gpu], host: &Host) {
    let gpus: Vec<&Gpu> = all
        .iter()
        .copied()
        .filter(|g| g.driver.as_deref() == Some("nvidia"))
        .collect();
    if gpus.is_empty() {
        return;
    }
    let key = |name: &str| format!("nvidia.com/{name}");
    let info = |g: &&Gpu| g.nvidia.clone().unwrap_or_default();
    out.insert(key("gpu.present"), "true".to_owned());
    out.insert(key("gpu.count"), gpus.len().to_string());
    if let Agreement::All(Some(product)) = agree(gpus.iter().map(|g| Some(gfd_product(&g.model)))) {
        out.insert(key("gpu.product"), product);
    }
    if let Some(min) = min_all(gpus.iter().map(|g| g.memory_bytes)) {
        out.insert(key("gpu.memory"), (min / MIB).to_string());
    }
    if let Agreement::All(cc) = agree(gpus.iter().map(|g| info(g).compute_capability))
        && let Some(parts) = version_parts(&cc)
        && let [major, minor] = parts[..]
        && let (Ok(ma), Ok(mi)) = (major.parse::<u32>(), minor.parse::<u32>())
        && ma > 0
    {
        out.insert(key("gpu.compute.major"), ma.to_string());
        out.insert(key("gpu.compute.minor"), mi.to_string());
        out.insert(key("gpu.family"), gfd_family(ma, mi).to_owned());
    }
    let module = |g: &&Gpu| {
        info(g)
            .kernel_module_version
            .or_else(|| module_version(host, "nvidia"))
    };
    if let Agreement::All(full) = agree(gpus.iter().map(module))
        && let Some(parts) = version_parts(&full)
    {
        out.insert(key("cuda.driver-version.full"), full.trim().to_owned());
        for (i, (new, old)) in [("major", "major"), ("minor", "minor"), ("revision", "rev")]
            .into_iter()
            .enumerate()
        {
            if let Some(v) = parts.get(i) {
                out.insert(key(&format!("cuda.driver-version.{new}")), (*v).to_owned());
                out.insert(key(&format!("cuda.driver.{old}")), (*v).to_owned());
            }
        }
    }
    if let Agreement::All(cuda) = agree(gpus.iter().map(|g| info(g).cuda_driver_version))
        && let Some(parts) = version_parts(&cuda)
        && let [major, minor, ..] = parts[..]
    {
        out.insert(key("cuda.runtime-version.major"), major.to_owned());
        out.insert(key("cuda.runtime-version.minor"), minor.to_owned());
        out.insert(key("cuda.runtime-version.full"), format!("{major}.{minor}"));
        out.insert(key("cuda.runtime.major"), major.to_owned());
        out.insert(key("cuda.runtime.minor"), minor.to_owned());
    }
    // GFD's getModeForClasses: one full PCI class for every GPU, else `unknown`.
    let classes: BTreeSet<u32> = gpus.iter().map(|g| g.class).collect();
    let mode = match classes.into_iter().collect::<Vec<_>>()[..] {
        [0x030000] => "graphics",
        [0x030200] => "compute",
        _ => "unknown",
    };
    out.insert(key("gpu.mode"), mode.to_owned());
    // GFD writes `true` when any GPU is MIG-capable, else `false`. NVML answers the MIG mode
    // query only for capable GPUs; where it answered nothing at all for some GPU (no compute
    // capability either) "not capable" cannot be told from "no NVML", so `false` is not claimed.
    let capable = gpus.iter().any(|g| info(g).mig_enabled.is_some());
    let nvml_answered = gpus.iter().all(|g| info(g).compute_capability.is_some());
    if capable || nvml_answered {
        out.insert(key("mig.capable"), capable.to_string());
    }
}

/// The `amd.com/gpu.*` keys ROCm's node labeller writes (module docs, compat profiles), as
/// ROCm/k8s-device-plugin `cmd/k8s-node-labeller/main.go` @ ed7646843003 computes them. The
/// labeller counts every compute partition as a GPU, so per-GPU values are per partition.
fn amd_labeller(out: &mut BTreeMap<String, String>, gpus: &[&Gpu], host: &Host) {
    let info = |g: &&Gpu| g.amd.clone().unwrap_or_default();
    let per_partition = |g: &&Gpu, total: Option<u32>| {
        let parts = info(g).partitions.unwrap_or(1).max(1);
        total.map(|t| (t / parts).to_string())
    };
    let kinds: [(&str, Vec<Option<String>>); 6] = [
        (
            // `FamilyIDtoString` knows only some families; for others it writes nothing.
            "family",
            gpus.iter()
                .map(|g| {
                    info(g)
                        .family
                        .filter(|f| crate::vendors::amd::LABELLER_FAMILIES.contains(&f.as_str()))
                })
                .collect(),
        ),
        (
            "cu-count",
            gpus.iter()
                .map(|g| per_partition(g, info(g).cu_count))
                .collect(),
        ),
        (
            "simd-count",
            gpus.iter()
                .map(|g| per_partition(g, info(g).simd_count))
                .collect(),
        ),
        (
            "device-id",
            gpus.iter()
                .map(|g| g.device_id.map(|d| format!("{d:04x}")))
                .collect(),
        ),
        (
            // `product_name` (FRU), else libdrm's amdgpu.ids name; never pci.ids. The labeller
            // drops parentheses and turns spaces into `_`.
            "product-name",
            gpus.iter()
                .map(|g| {
                    matches!(g.model_source, ModelSource::Vendor | ModelSource::AmdgpuIds)
                        .then(|| g.model.replace(['(', ')'], ""))
                })
                .collect(),
        ),
        (
            // KFD `mem_banks/0` `size_in_bytes` of the GPU's node, MiB then rounded GiB.
            "vram",
            gpus.iter()
                .map(|g| {
                    let bytes = info(g).kfd_mem_bank_bytes?;
                    let gib = ((bytes / MIB) as f64 / 1024.0).round() as u64;
                    Some(format!("{gib}G"))
                })
                .collect(),
        ),
    ];
    for (kind, values) in kinds {
        let base = format!("gpu.{kind}");
        let mut by_value: BTreeMap<String, usize> = BTreeMap::new();
        for v in values.into_iter().flatten() {
            *by_value.entry(v).or_default() += 1;
        }
        if by_value.len() == 1 {
            if let Some(v) = by_value
                .keys()
                .next()
                .and_then(|v| sanitize(v, MAX_LEN, '_'))
            {
                out.insert(format!("amd.com/{base}"), v);
            }
        } else {
            let mut counts = BTreeMap::new();
            for (v, n) in by_value {
                count_key(&mut counts, &base, &v, '_', n);
            }
            for (name, n) in counts {
                out.insert(format!("amd.com/{name}"), n.to_string());
            }
        }
    }
    if let Some(v) = module_version(host, "amdgpu").and_then(|v| sanitize(&v, MAX_LEN, '_')) {
        out.insert("amd.com/gpu.driver-version".to_owned(), v);
    }
    // The first GPU's `driver/module/srcversion`, as the labeller reads it.
    if let Some(v) = gpus
        .iter()
        .find_map(|g| info(g).driver_srcversion)
        .and_then(|v| sanitize(&v, MAX_LEN, '_'))
    {
        out.insert("amd.com/gpu.driver-src-version".to_owned(), v);
    }
    // `<compute>_<memory>` partition modes in lower case, when every GPU that has both agrees.
    let modes: BTreeSet<String> = gpus
        .iter()
        .filter_map(|g| {
            let i = info(g);
            Some(format!(
                "{}_{}",
                i.compute_partition?.to_lowercase(),
                i.memory_partition?.to_lowercase()
            ))
        })
        .collect();
    if modes.len() == 1
        && let Some(v) = modes.iter().next().and_then(|v| sanitize(v, MAX_LEN, '_'))
    {
        out.insert("amd.com/gpu.compute-memory-partition".to_owned(), v);
    }
}

/// The keys Intel's NFD rules write (module docs, compat profiles): intel/intel-device-plugins-for-
/// kubernetes `deployments/nfd/overlays/node-feature-rules/node-feature-rules.yaml` (`intel.gpu`)
/// and `platform-labeling-rules.yaml` @ 94a91bc94134.
fn intel_nfd(out: &mut BTreeMap<String, String>, gpus: &[&Gpu], host: &Host) {
    // (class as NFD prints it, device id) of display (0300) and display-other (0380) GPUs.
    let ids: Vec<(String, String)> = gpus
        .iter()
        .filter_map(|g| {
            let class = g.class >> 8;
            let dev = g.device_id?;
            matches!(class, 0x0300 | 0x0380).then(|| (format!("{class:04x}"), format!("{dev:04x}")))
        })
        .collect();
    if ids.is_empty() {
        return;
    }
    let driver_usable = host
        .modules
        .iter()
        .any(|m| (m.name == "i915" || m.name == "xe") && m.is_usable());
    if driver_usable {
        out.insert(
            "intel.feature.node.kubernetes.io/gpu".to_owned(),
            "true".to_owned(),
        );
    }
    for (class, dev) in &ids {
        out.insert(
            format!("gpu.intel.com/device-id.{class}-{dev}.present"),
            "true".to_owned(),
        );
    }
    for class in ["0300", "0380"] {
        let of_class: Vec<&(String, String)> = ids.iter().filter(|(c, _)| c == class).collect();
        if let Some((_, first)) = of_class.first() {
            out.insert(
                format!("gpu.intel.com/device-id.{class}-{first}.count"),
                of_class.len().to_string(),
            );
        }
    }
    // The product and family rules, in file order (a later rule's label wins).
    for rule in INTEL_PRODUCT_RULES {
        let n = ids
            .iter()
            .filter(|(c, d)| c == rule.class && rule.devices.contains(&d.as_str()))
            .count();
        if n == 0 {
            continue;
        }
        if let Some(p) = rule.product {
            out.insert("gpu.intel.com/product".to_owned(), p.to_owned());
            out.insert("gpu.intel.com/device.count".to_owned(), n.to_string());
        }
        if let Some(f) = rule.family {
            out.insert("gpu.intel.com/family".to_owned(), f.to_owned());
        }
    }
}

/// One product/family rule of Intel's `platform-labeling-rules.yaml`: GPUs of `class` with one
/// of `devices` get `gpu.intel.com/product` (with `gpu.intel.com/device.count`, the number of
/// them) and/or `gpu.intel.com/family`.
struct IntelProductRule {
    class: &'static str,
    devices: &'static [&'static str],
    product: Option<&'static str>,
    family: Option<&'static str>,
}

/// intel/intel-device-plugins-for-kubernetes
/// `deployments/nfd/overlays/node-feature-rules/platform-labeling-rules.yaml` @ 94a91bc94134
/// (2026-06-15), in the file's order.
const INTEL_PRODUCT_RULES: &[IntelProductRule] = &[
    IntelProductRule {
        class: "0380",
        devices: &["0bda"],
        product: Some("Max_1100"),
        family: None,
    },
    IntelProductRule {
        class: "0380",
        devices: &["0bd5"],
        product: Some("Max_1550"),
        family: None,
    },
    IntelProductRule {
        class: "0380",
        devices: &["0bda", "0bd5", "0bd9", "0bdb", "0bd7", "0bd6", "0bd0"],
        product: None,
        family: Some("Max_Series"),
    },
    IntelProductRule {
        class: "0380",
        devices: &["56c0"],
        product: Some("Flex_170"),
        family: Some("Flex_Series"),
    },
    IntelProductRule {
        class: "0380",
        devices: &["56c1"],
        product: Some("Flex_140"),
        family: Some("Flex_Series"),
    },
    IntelProductRule {
        class: "0300",
        devices: &[
            "56a6", "56a5", "56a1", "56a0", "5694", "5693", "5692", "5691", "5690", "56b3", "56b2",
            "56a4", "56a3", "5697", "5696", "5695", "56b1", "56b0", "56a2", "56ba", "56bc", "56bd",
            "56bb",
        ],
        product: None,
        family: Some("A_Series"),
    },
];

#[cfg(test)]
mod tests;
