//! Host facts: kernel release, OS, Talos version and installed extensions, kernel modules.
//!
//! Reads through [`HostRoot`]:
//! - `proc/sys/kernel/osrelease` (kernel release); missing: `kernel` is `null`.
//! - `etc/os-release`, else `usr/lib/os-release` (`PRETTY_NAME`, `ID`, `VERSION_ID`); Talos is
//!   `ID=talos`. Missing: `os` is `null` and the host is treated as not Talos.
//! - `etc/extensions.yaml` on Talos: the `layers:` list Talos' init writes; the synthetic
//!   `schematic` and `modules.dep` entries are dropped. Missing or malformed: no extensions, and
//!   the file is listed as unread. Nested deeper than `parse::MAX_NESTING` levels: refused before
//!   parsing (listed as unread the same way), so a hostile file cannot cost quadratic time.
//! - `proc/modules` (`name size refcnt deps state address [taint]`) and `sys/module/<m>/`
//!   (`initstate`, `version`, `taint`). A module directory without `initstate` is built in.
//! - `proc/sys/kernel/hostname` for the report's `node` when no Node name is given ([`hostname`]);
//!   missing or empty: `node` is `null`.

use crate::attr::{Reader, unread_of};
use crate::hostroot::HostRoot;
use crate::model::{Extension, Host, HostReadErrors, ModuleLoad, ModuleState, TalosInfo, Unread};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Kernel modules whose state the report lists (GPU drivers and their helpers).
pub const GPU_MODULES: &[&str] = &[
    "amdgpu",
    "amdxcp",
    "i915",
    "xe",
    "mei",
    "mei_me",
    "mei_gsc",
    "nvidia",
    "nvidia_uvm",
    "nvidia_drm",
    "nvidia_modeset",
    "nvidia_peermem",
    "nouveau",
    "vfio_pci",
];

/// The host's name from `proc/sys/kernel/hostname` (the UTS name of whoever reads it: in a pod
/// without `hostNetwork` that is the pod's name, so the DaemonSet passes `NODE_NAME`). `None`
/// when missing, unreadable or empty; the report then has `node: null`.
pub fn hostname(root: &HostRoot) -> Option<String> {
    root.read_trimmed("proc/sys/kernel/hostname")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 253)
}

/// Read host facts. Never fails: what cannot be read is recorded in `unread`.
pub fn read(root: &HostRoot) -> Host {
    let mut unread = Vec::new();
    let mut read_errors = HostReadErrors::default();
    let kernel = Reader::new(root, &mut unread)
        .optional(root.read_trimmed("proc/sys/kernel/osrelease"))
        .filter(|k| !k.is_empty());
    let os_release = match read_os_release(root) {
        Ok(m) => m,
        Err(u) => {
            if let Some(u) = u {
                unread.push(u.clone());
                read_errors.os_release = Some(u);
            }
            BTreeMap::new()
        }
    };
    let os = os_release
        .get("PRETTY_NAME")
        .or_else(|| os_release.get("NAME"))
        .cloned();
    let talos = if os_release.get("ID").map(String::as_str) == Some("talos") {
        let version = os_release
            .get("VERSION_ID")
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned());
        let extensions = match read_extensions(root) {
            Ok(v) => v,
            Err(u) => {
                unread.push(u.clone());
                read_errors.extensions_yaml = Some(u);
                Vec::new()
            }
        };
        Some(TalosInfo {
            version,
            extensions,
        })
    } else {
        None
    };
    let modules = read_modules(root, GPU_MODULES, &mut unread);
    Host {
        kernel,
        os,
        talos,
        modules,
        unread,
        disagreements: Vec::new(),
        nvswitches: Vec::new(),
        read_errors,
    }
}

/// `etc/os-release`, else `usr/lib/os-release`. `Err(None)`: neither exists; `Err(Some)`: one
/// exists but cannot be read.
fn read_os_release(root: &HostRoot) -> Result<BTreeMap<String, String>, Option<Unread>> {
    let text = match root.read_string("etc/os-release") {
        Ok(t) => t,
        Err(e) if e.is_not_found() => match root.read_string("usr/lib/os-release") {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Err(None),
            Err(e) => return Err(Some(unread_of(&e))),
        },
        Err(e) => return Err(Some(unread_of(&e))),
    };
    Ok(parse_os_release(&text))
}

/// `KEY=value` lines with optional shell quoting, as os-release(5) defines them.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.to_owned(), v.replace("\\\"", "\"")))
        })
        .collect()
}

#[derive(Deserialize)]
struct ExtensionsFile {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    metadata: LayerMeta,
}

#[derive(Deserialize)]
struct LayerMeta {
    name: String,
    #[serde(default)]
    version: String,
}

/// Host path of Talos' installed-extension list.
pub const EXTENSIONS_YAML: &str = "etc/extensions.yaml";

/// The installed extensions; `Err` when the file exists but cannot be read or parsed.
fn read_extensions(root: &HostRoot) -> Result<Vec<Extension>, Unread> {
    match root.read_string(EXTENSIONS_YAML) {
        Ok(text) => parse_extensions(&text).map_err(|reason| Unread {
            path: format!("/{EXTENSIONS_YAML}"),
            error: reason,
        }),
        // A Talos node without extensions has no file: an empty list, not an error.
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(unread_of(&e)),
    }
}

/// Parse `/etc/extensions.yaml` (`layers: [{image, metadata: {name, version, ...}}]`),
/// dropping the synthetic `schematic` and `modules.dep` entries. Sorted by name.
pub fn parse_extensions(text: &str) -> Result<Vec<Extension>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    // Bounded before parsing: a deeply nested file costs libyaml quadratic time.
    crate::parse::check_yaml_bounds(text).map_err(|e| format!("refused extensions.yaml: {e}"))?;
    let file: ExtensionsFile =
        serde_norway::from_str(text).map_err(|e| format!("malformed extensions.yaml: {e}"))?;
    let mut out: Vec<Extension> = file
        .layers
        .into_iter()
        .map(|l| l.metadata)
        .filter(|m| m.name != "schematic" && m.name != "modules.dep")
        .map(|m| Extension {
            name: m.name.trim_start_matches("siderolabs/").to_owned(),
            version: m.version,
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// One parsed `/proc/modules` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcModule {
    pub name: String,
    pub state: ModuleLoad,
    pub taint: Option<String>,
}

/// Parse `/proc/modules`; malformed lines are skipped.
pub fn parse_proc_modules(text: &str) -> Vec<ProcModule> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[1].parse::<u64>().is_err() {
                return None;
            }
            let state = ModuleLoad::from(f[4]);
            if !matches!(
                state,
                ModuleLoad::Live | ModuleLoad::Loading | ModuleLoad::Unloading
            ) {
                return None;
            }
            let taint = f
                .get(6)
                .and_then(|t| t.strip_prefix('(')?.strip_suffix(')'))
                .map(str::to_owned);
            Some(ProcModule {
                name: f[0].to_owned(),
                state,
                taint,
            })
        })
        .collect()
}

/// State of each named module. Evidence, most trusted first: `/proc/modules`, then
/// `sys/module/<m>/initstate`; a `sys/module/<m>` directory without `initstate` is built in.
pub fn read_modules(root: &HostRoot, names: &[&str], unread: &mut Vec<Unread>) -> Vec<ModuleState> {
    let proc_modules = Reader::new(root, unread)
        .optional(root.read_string("proc/modules"))
        .map(|t| parse_proc_modules(&t))
        .unwrap_or_default();
    // One listing instead of probing sys/module/<m> for every name: most are absent.
    let sys_modules = root.list_dir("sys/module").unwrap_or_default();
    names
        .iter()
        .filter(|name| {
            proc_modules.iter().any(|m| m.name == **name)
                || sys_modules
                    .binary_search_by(|s| s.as_str().cmp(name))
                    .is_ok()
        })
        .map(|name| module_state(&mut Reader::new(root, unread), name, &proc_modules))
        .filter(|m| m.state != ModuleLoad::Absent)
        .collect()
}

/// One module's state. A `sys/module/<m>` file that exists but cannot be read is recorded in
/// `unread`; an unreadable `initstate` makes the state `unknown`, never `builtin`.
fn module_state(r: &mut Reader<'_>, name: &str, proc_modules: &[ProcModule]) -> ModuleState {
    let root = r.root;
    let dir = format!("sys/module/{name}");
    let sys = |r: &mut Reader<'_>, f: &str| {
        r.optional(root.read_trimmed(format!("{dir}/{f}")))
            .filter(|s| !s.is_empty())
    };
    let version = sys(r, "version");
    let from_proc = proc_modules.iter().find(|m| m.name == name);
    let (state, taint) = if let Some(m) = from_proc {
        (m.state.clone(), m.taint.clone().or_else(|| sys(r, "taint")))
    } else {
        match root.read_trimmed(format!("{dir}/initstate")) {
            Ok(init) => (ModuleLoad::from(init.as_str()), sys(r, "taint")),
            Err(e) if e.is_not_found() && root.exists(&dir) => (ModuleLoad::Builtin, None),
            Err(e) if e.is_not_found() => (ModuleLoad::Absent, None),
            Err(e) => {
                r.record(crate::attr::unread_of(&e));
                (ModuleLoad::Unknown, sys(r, "taint"))
            }
        }
    };
    ModuleState {
        name: name.to_owned(),
        state,
        version,
        taint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quotes() {
        let m = parse_os_release(
            "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.11.5\nPRETTY_NAME=\"Talos (v1.11.5)\"\n# c\n",
        );
        assert_eq!(m["ID"], "talos");
        assert_eq!(m["PRETTY_NAME"], "Talos (v1.11.5)");
    }

    #[test]
    fn extensions_drop_synthetic_entries() {
        let y = r#"
layers:
  - image: 0.sqsh
    metadata:
      name: amdgpu
      version: 20251021-v1.11.5
      author: Sidero Labs
      description: x
      compatibility: {talos: {version: ">= v1.11.0"}}
  - image: 1.sqsh
    metadata: {name: schematic, version: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba, author: Image Factory}
  - image: modules.dep.sqsh
    metadata: {name: modules.dep, version: 6.12.57-talos, author: Talos Machinery}
"#;
        let e = parse_extensions(y).unwrap();
        assert_eq!(
            e,
            vec![Extension {
                name: "amdgpu".into(),
                version: "20251021-v1.11.5".into()
            }]
        );
        assert!(parse_extensions("layers: {oops").is_err());
        let deep = format!("layers: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(
            parse_extensions(&deep)
                .unwrap_err()
                .contains("nesting deeper")
        );
        assert!(parse_extensions("").unwrap().is_empty());
    }

    #[test]
    fn proc_modules_lines() {
        let m = parse_proc_modules(
            "nvidia 54300672 67 nvidia_modeset,nvidia_uvm, Live 0x0000000000000000 (POE)\n\
             amdgpu 12345 0 - Live 0xffffffffc0000000\n\
             garbage line\n\
             bad notanumber 0 - Live 0x0\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].taint.as_deref(), Some("POE"));
        assert_eq!(m[1].state, ModuleLoad::Live);
    }

    #[test]
    fn an_unreadable_initstate_is_unknown_and_recorded_never_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("sys/module");
        std::fs::create_dir_all(m.join("amdgpu/initstate")).unwrap(); // a directory: unreadable
        std::fs::create_dir_all(m.join("i915")).unwrap(); // no initstate: built in
        let root = HostRoot::new(dir.path()).unwrap();
        let mut unread = Vec::new();
        let mods = read_modules(&root, &["amdgpu", "i915", "nvidia"], &mut unread);
        let state = |n: &str| mods.iter().find(|m| m.name == n).map(|m| m.state.clone());
        assert_eq!(state("amdgpu"), Some(ModuleLoad::Unknown));
        assert_eq!(state("i915"), Some(ModuleLoad::Builtin));
        assert_eq!(state("nvidia"), None);
        assert_eq!(unread.len(), 1, "{unread:?}");
        assert!(
            unread[0].path.ends_with("sys/module/amdgpu/initstate"),
            "{unread:?}"
        );
    }
}
