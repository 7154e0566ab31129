//! Caps on text that reaches the report or a metric label. No I/O.
//!
//! Every string the agent shows comes, at some remove, from a host file, a vendor library or a
//! Node object: a 250 KB `vbios_version` or Talos `VERSION_ID` would otherwise become a 250 KB
//! JSON field and a 250 KB label value on every scrape. A value is cut to [`MAX_VALUE`] bytes, a
//! sentence (an `unread` reason, a problem's detail or hint, a path) to [`MAX_TEXT`], always at a
//! character boundary and ending in [`CUT_MARK`], so a cut value is never mistaken for a real
//! one. Node labels have their own, stricter rules (63 characters, `labels.rs`).

use crate::model::{Disagreement, Gpu, Host, Problem, Report, Sriov, Unread};
use serde::{Serialize, de::DeserializeOwned};

/// Longest value (a version, a model name, a metric label value), marker included.
pub const MAX_VALUE: usize = 256;

/// Longest sentence or path (an `unread` reason, a problem's detail or hint), marker included.
pub const MAX_TEXT: usize = 1024;

/// Appended to every string that was cut.
pub const CUT_MARK: &str = "…[cut]";

/// Cut `s` to at most `max` bytes (marker included) at a character boundary. True if it was cut.
pub fn cap(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let room = max.saturating_sub(CUT_MARK.len());
    let end = (0..=room)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    s.truncate(end);
    s.push_str(CUT_MARK);
    true
}

fn value(s: &mut String) {
    cap(s, MAX_VALUE);
}

fn opt(s: &mut Option<String>) {
    if let Some(s) = s {
        value(s);
    }
}

fn unread(list: &mut [Unread]) {
    for u in list {
        cap(&mut u.path, MAX_TEXT);
        cap(&mut u.error, MAX_TEXT);
    }
}

/// Cap every string inside a serde value (a problem's typed cause and notes carry host strings,
/// e.g. the raw `VERSION_ID` that is not a Talos release tag).
fn strings_in<T: Serialize + DeserializeOwned>(v: &mut T) {
    fn walk(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => cap(s, MAX_VALUE),
            serde_json::Value::Array(a) => a.iter_mut().fold(false, |c, x| walk(x) | c),
            serde_json::Value::Object(o) => o.values_mut().fold(false, |c, x| walk(x) | c),
            _ => false,
        }
    }
    let Ok(mut json) = serde_json::to_value(&*v) else {
        return;
    };
    if walk(&mut json)
        && let Ok(capped) = serde_json::from_value(json)
    {
        *v = capped;
    }
}

fn problems(list: &mut [Problem]) {
    for p in list {
        cap(&mut p.detail, MAX_TEXT);
        cap(&mut p.hint, MAX_TEXT);
        strings_in(&mut p.cause);
        strings_in(&mut p.notes);
    }
}

fn disagreements(list: &mut [Disagreement]) {
    for d in list {
        value(&mut d.gpu);
        value(&mut d.source);
        value(&mut d.field);
        opt(&mut d.kernel);
        value(&mut d.library);
    }
}

fn host(h: &mut Host) {
    opt(&mut h.kernel);
    opt(&mut h.os);
    if let Some(t) = &mut h.talos {
        value(&mut t.version);
        for e in &mut t.extensions {
            value(&mut e.name);
            value(&mut e.version);
        }
    }
    for m in &mut h.modules {
        value(&mut m.name);
        if let crate::model::ModuleLoad::Other(s) = &mut m.state {
            value(s);
        }
        opt(&mut m.version);
        opt(&mut m.taint);
    }
    for s in &mut h.nvswitches {
        value(s);
    }
    unread(&mut h.unread);
    for u in [
        &mut h.read_errors.os_release,
        &mut h.read_errors.extensions_yaml,
    ]
    .into_iter()
    .flatten()
    {
        unread(std::slice::from_mut(u));
    }
    disagreements(&mut h.disagreements);
}

fn gpu(g: &mut Gpu) {
    value(&mut g.model);
    opt(&mut g.driver);
    opt(&mut g.card);
    opt(&mut g.render);
    match &mut g.sriov {
        Some(Sriov::Vf { physfn }) => value(physfn),
        Some(Sriov::Pf { vfs, .. }) => vfs.iter_mut().for_each(value),
        None => {}
    }
    if let Some(a) = &mut g.amd {
        opt(&mut a.gfx_target);
        opt(&mut a.gc_version);
        opt(&mut a.family);
        opt(&mut a.vbios_version);
        opt(&mut a.compute_partition);
        opt(&mut a.memory_partition);
    }
    if let Some(n) = &mut g.nvidia {
        opt(&mut n.uuid);
        opt(&mut n.vbios_version);
        opt(&mut n.gsp_firmware);
        opt(&mut n.kernel_module_flavor);
        opt(&mut n.kernel_module_version);
        opt(&mut n.compute_capability);
        opt(&mut n.cuda_driver_version);
        opt(&mut n.family);
        opt(&mut n.nvml_error);
    }
    if let Some(i) = &mut g.intel {
        opt(&mut i.arch);
        opt(&mut i.platform);
        opt(&mut i.expected_driver);
    }
    problems(&mut g.problems);
    unread(&mut g.unread);
    if let Some(u) = &mut g.driver_link_error {
        unread(std::slice::from_mut(u));
    }
    disagreements(&mut g.disagreements);
}

/// Cap every string of `r` (labels excepted: they are bounded when computed).
pub fn cap_report(r: &mut Report) {
    host(&mut r.host);
    for g in &mut r.gpus {
        gpu(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_char_boundary_with_a_marker() {
        let mut short = "113-D70401XT-N11".to_owned();
        assert!(!cap(&mut short, MAX_VALUE));
        assert_eq!(short, "113-D70401XT-N11");
        let mut long = "é".repeat(200_000);
        assert!(cap(&mut long, MAX_VALUE));
        assert!(long.len() <= MAX_VALUE);
        assert!(long.ends_with(CUT_MARK));
        assert!(long.trim_end_matches(CUT_MARK).chars().all(|c| c == 'é'));
        let mut exact = "x".repeat(MAX_VALUE);
        assert!(!cap(&mut exact, MAX_VALUE));
    }
}
