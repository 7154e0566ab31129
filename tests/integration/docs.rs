//! The reference docs in `docs/reference/` against the code, so they cannot drift:
//!
//! - `cli.md` is generated from the clap command tree ([`gpuscout::clidoc`]);
//! - the metric families table and the verdict examples are generated sections of `metrics.md`
//!   and `verdicts.md`, made from scrapes and discovery passes on every fixture;
//! - the label tables of `labels.md` are hand-written and checked against the labels computed on
//!   every fixture (every compat profile on, NVML answers from the test double);
//! - the statuses of `verdicts.md` against `Status::ALL`;
//! - `report.schema.json` validates every golden report and every verdict fixture's report
//!   (Python `jsonschema`, the reference implementation, from the test venv: no Rust JSON
//!   Schema crate and its dependency tree for one test);
//! - `Cargo.toml`'s `rust-version` is the highest of every dependency's.
//!
//! `UPDATE_DOCS=1 cargo test --test integration docs::` rewrites the generated parts.

#![allow(clippy::disallowed_methods)] // tests read and write the docs directly

use gpuscout::discover::{self, Options};
use gpuscout::hostroot::HostRoot;
use gpuscout::labels::{CompatProfiles, LabelConfig};
use gpuscout::metrics::{self, ScrapeContext, Sink};
use gpuscout::model::{Report, Status};
use gpuscout::nvml::{Nvml, NvmlConfig, NvmlHandle};
use gpuscout_test_support::nvml_double::{Double, full_gpu};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn update() -> bool {
    std::env::var_os("UPDATE_DOCS").is_some_and(|v| !v.is_empty() && v != "0")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const HINT: &str = "run `UPDATE_DOCS=1 cargo test --test integration docs::` and commit the result";

/// Compare a whole generated file, or rewrite it with UPDATE_DOCS.
fn sync_file(rel: &str, content: &str) {
    let path = repo().join(rel);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if old == content {
        return;
    }
    if update() {
        std::fs::write(&path, content).unwrap();
        return;
    }
    panic!(
        "{rel} is out of date with the code: {HINT}\n{}",
        first_diff(&old, content)
    );
}

/// Compare the part of `rel` between the `BEGIN/END GENERATED: marker` comments, or rewrite it.
fn sync_section(rel: &str, marker: &str, content: &str) {
    let text = read(rel);
    let begin = format!("<!-- BEGIN GENERATED: {marker} -->\n");
    let end = format!("<!-- END GENERATED: {marker} -->");
    let b = text
        .find(&begin)
        .unwrap_or_else(|| panic!("{rel}: no `{}` marker", begin.trim()))
        + begin.len();
    let e = text[b..]
        .find(&end)
        .unwrap_or_else(|| panic!("{rel}: no `{end}` marker"))
        + b;
    if &text[b..e] == content {
        return;
    }
    if update() {
        let new = format!("{}{content}{}", &text[..b], &text[e..]);
        std::fs::write(repo().join(rel), new).unwrap();
        return;
    }
    panic!(
        "{rel} section {marker} is out of date with the code: {HINT}\n{}",
        first_diff(&text[b..e], content)
    );
}

fn first_diff(old: &str, new: &str) -> String {
    for (i, (a, b)) in old.lines().zip(new.lines()).enumerate() {
        if a != b {
            return format!("line {}:\n  docs: {a}\n  code: {b}", i + 1);
        }
    }
    format!(
        "docs have {} lines, code {} lines",
        old.lines().count(),
        new.lines().count()
    )
}

/// Every host root the tests ship: `hosts/*`, `metrics/*` and `verdicts/*`.
fn all_roots() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for group in ["hosts", "metrics", "verdicts"] {
        let dir = repo().join("tests/fixtures").join(group);
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.path().join("sys").is_dir() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn all_compat() -> LabelConfig {
    LabelConfig {
        compat: CompatProfiles {
            nvidia_gfd: true,
            amd_labeller: true,
            intel_nfd: true,
        },
        ..LabelConfig::default()
    }
}

/// NVML test doubles for the NVIDIA fixtures: full readings (RTX 4090) and MIG, ECC and XID
/// events (H100).
fn nvml_cases() -> Vec<(&'static str, Double)> {
    vec![
        (
            "rtx4090-proprietary",
            Double::new(&format!(
                "driver_version=570.172.08\ncuda_version=12080\n{}",
                full_gpu(
                    0,
                    "00000000:01:00.0",
                    "NVIDIA GeForce RTX 4090",
                    "GPU-5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61"
                )
            )),
        ),
        (
            "nvidia-h100-mig",
            Double::new(
                "driver_version=550.127.05\ncuda_version=12040\n\
                 gpu.0.bus_id=00000000:1B:00.0\ngpu.0.name=NVIDIA H100 80GB HBM3\n\
                 gpu.0.pci_device_id=0x233010de\ngpu.0.mem_total=85520809984\ngpu.0.mem_used=0\n\
                 gpu.0.cc=9.0\ngpu.0.arch=9\ngpu.0.mig_current=1\ngpu.0.mig_pending=1\n\
                 gpu.0.mig_max=7\ngpu.0.mig_devices=2\ngpu.0.ecc_mode=1\ngpu.0.ecc_corrected=3\n\
                 gpu.0.ecc_uncorrected=1\ngpu.0.temp=40\ngpu.0.power_mw=70000\n\
                 gpu.0.xid=79,13\n",
            ),
        ),
    ]
}

fn nvml_handle(root: &HostRoot, d: &Double) -> NvmlHandle {
    let mut c = NvmlConfig::new(root.clone());
    c.lib_path = Some(d.lib.clone());
    c.call_timeout = Duration::from_secs(5);
    c.init_timeout = Duration::from_secs(5);
    c.quiet = true;
    Nvml::start(c)
}

fn hosts_root(name: &str) -> HostRoot {
    HostRoot::new(repo().join("tests/fixtures/hosts").join(name)).unwrap()
}

#[test]
fn cli_reference_is_generated_from_clap() {
    let md = gpuscout::clidoc::markdown();
    sync_file("docs/reference/cli.md", &md);
    // Belt and braces: every flag of the command tree is named in the file, and no `--flag`
    // in its tables is unknown to clap.
    let text = read("docs/reference/cli.md");
    let flags = gpuscout::clidoc::all_flags();
    for f in &flags {
        assert!(
            text.contains(&format!("`--{f}")),
            "--{f} missing from cli.md"
        );
    }
    for line in text.lines().filter(|l| l.starts_with("| `--")) {
        let f = line[3..]
            .split([' ', '`'])
            .next()
            .unwrap()
            .trim_start_matches("--");
        assert!(
            flags.contains(f),
            "cli.md documents --{f}, which clap does not know"
        );
    }
}

#[test]
fn statuses_are_documented() {
    let text = read("docs/reference/verdicts.md");
    let documented: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`'))
        .map(str::to_owned)
        .collect();
    let code: Vec<String> = Status::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    assert_eq!(
        documented, code,
        "docs/reference/verdicts.md must have one `### `status`` section per Status::ALL entry, in order"
    );
    // The schema's enum too.
    let schema: serde_json::Value =
        serde_json::from_str(&read("docs/reference/report.schema.json")).unwrap();
    let en: Vec<String> = schema["$defs"]["status"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(en, code, "report.schema.json $defs.status.enum");
}

#[test]
fn verdict_examples_are_current() {
    let mut out =
        String::from("| fixture | status | what `check` prints on stderr |\n|---|---|---|\n");
    for root in all_roots()
        .into_iter()
        .filter(|p| p.parent().unwrap().ends_with("verdicts"))
    {
        let r = discover::discover(
            &HostRoot::new(&root).unwrap(),
            &Options::default(),
            &Default::default(),
        );
        for g in &r.gpus {
            let lines: Vec<String> = g
                .problems
                .iter()
                .map(|p| gpuscout::verdict::problem_line(g, p).replace('|', "\\|"))
                .collect();
            let shown = if lines.is_empty() {
                "(nothing: exit 0)".to_owned()
            } else {
                lines.join("<br>")
            };
            out.push_str(&format!(
                "| `{}` | `{}` | {shown} |\n",
                name_of(&root),
                g.status
            ));
        }
    }
    sync_section("docs/reference/verdicts.md", "verdict-examples", &out);
}

/// A documented key as a regex: `V.` is any vendor, `<...>` one key segment.
fn key_regex(doc_key: &str) -> String {
    let mut re = String::from("^");
    let mut rest = doc_key;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('<') {
            let end = r.find('>').expect("closing >");
            re.push_str("[A-Za-z0-9_-][A-Za-z0-9._-]*");
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix("/V.") {
            re.push_str("/(amd|nvidia|intel)\\.");
            rest = r;
        } else {
            let c = rest.chars().next().unwrap();
            if c.is_ascii_alphanumeric() || c == '-' || c == '/' || c == '_' {
                re.push(c);
            } else {
                re.push('\\');
                re.push(c);
            }
            rest = &rest[c.len_utf8()..];
        }
    }
    re.push('$');
    re
}

fn matches(re: &str, key: &str) -> bool {
    // A tiny matcher for the patterns key_regex makes: literal chars, `\.`, one class with `*`,
    // and the vendor alternation.
    fn m(p: &[u8], k: &[u8]) -> bool {
        if p.is_empty() || p == b"$" {
            return k.is_empty();
        }
        if let Some(rest) = p.strip_prefix(b"(amd|nvidia|intel)") {
            return [&b"amd"[..], b"nvidia", b"intel"]
                .iter()
                .any(|v| k.starts_with(v) && m(rest, &k[v.len()..]));
        }
        if let Some(rest) = p.strip_prefix(b"[A-Za-z0-9_-][A-Za-z0-9._-]*") {
            let first = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
            let more = |c: u8| first(c) || c == b'.';
            if k.is_empty() || !first(k[0]) {
                return false;
            }
            let mut i = 1;
            loop {
                if m(rest, &k[i..]) {
                    return true;
                }
                if i < k.len() && more(k[i]) {
                    i += 1;
                } else {
                    return false;
                }
            }
        }
        let (c, rest) = if p[0] == b'\\' {
            (p[1], &p[2..])
        } else {
            (p[0], &p[1..])
        };
        !k.is_empty() && k[0] == c && m(rest, &k[1..])
    }
    m(re.trim_start_matches('^').as_bytes(), key.as_bytes())
}

/// Every label key the code computes on the fixtures: each host root with every compat profile
/// on, the NVIDIA fixtures with NVML answers, and one host holding every fixture's GPUs (which
/// makes the `mixed` keys).
fn computed_label_keys() -> BTreeSet<String> {
    let opts = Options {
        labels: all_compat(),
        ..Options::default()
    };
    let mut keys = BTreeSet::new();
    let mut every_gpu = Vec::new();
    let mut talos_host = None;
    for root in all_roots() {
        let r = discover::discover(&HostRoot::new(&root).unwrap(), &opts, &Default::default());
        keys.extend(r.labels.keys().cloned());
        if r.host.talos.is_some() && talos_host.is_none() {
            talos_host = Some(r.host.clone());
        }
        every_gpu.extend(r.gpus);
    }
    for (name, d) in nvml_cases() {
        let root = hosts_root(name);
        let h = nvml_handle(&root, &d);
        let r = discover::discover(&root, &opts, &discover::Evidence::with_nvml(h));
        assert!(
            r.gpus.iter().any(|g| g
                .nvidia
                .as_ref()
                .is_some_and(|n| n.compute_capability.is_some())),
            "{name}: NVML double not joined"
        );
        keys.extend(r.labels.keys().cloned());
        every_gpu.extend(r.gpus);
    }
    let host = talos_host.expect("a Talos fixture");
    keys.extend(gpuscout::labels::compute(&host, &every_gpu, &all_compat()).into_keys());
    keys
}

#[test]
fn labels_reference_matches_the_code() {
    let text = read("docs/reference/labels.md");
    let documented: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|k| k.contains('/'))
        .map(str::to_owned)
        .collect();
    assert!(
        documented.len() > 30,
        "label tables not found: {documented:?}"
    );
    let patterns: Vec<(String, String)> = documented
        .iter()
        .map(|d| (d.clone(), key_regex(d)))
        .collect();
    let keys = computed_label_keys();
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| !patterns.iter().any(|(_, re)| matches(re, k)))
        .collect();
    let unused: Vec<&String> = patterns
        .iter()
        .filter(|(_, re)| !keys.iter().any(|k| matches(re, k)))
        .map(|(d, _)| d)
        .collect();
    assert!(
        undocumented.is_empty() && unused.is_empty(),
        "docs/reference/labels.md and the code disagree.\nComputed but not documented: {undocumented:?}\nDocumented but never computed on the fixtures: {unused:?}"
    );
}

#[test]
fn key_patterns() {
    let re = key_regex("gpuscout.io/V.product.<model>");
    assert!(matches(&re, "gpuscout.io/nvidia.product.NVIDIA-H100"));
    assert!(!matches(&re, "gpuscout.io/nvidia.product"));
    assert!(!matches(&re, "gpuscout.io/arm.product.X"));
    let re = key_regex("gpu.intel.com/device-id.<class>-<device>.present");
    assert!(matches(&re, "gpu.intel.com/device-id.0300-56a0.present"));
    assert!(!matches(&re, "gpu.intel.com/device-id.0300-56a0.count"));
    assert!(matches(
        &key_regex("gpuscout.io/present"),
        "gpuscout.io/present"
    ));
    assert!(!matches(
        &key_regex("gpuscout.io/present"),
        "gpuscout.io/presentX"
    ));
}

/// What the metrics table says about one family.
#[derive(Default)]
struct FamilyDoc {
    kind: &'static str,
    help: String,
    labels: BTreeSet<String>,
    sources: BTreeSet<String>,
}

fn note_sink(fams: &mut BTreeMap<String, FamilyDoc>, sink: &Sink, source: &str) {
    for f in sink.families() {
        let (name, kind) = match f.desc.kind {
            metrics::families::Kind::Gauge => (format!("gpuscout_{}", f.desc.name), "gauge"),
            metrics::families::Kind::Counter => {
                (format!("gpuscout_{}_total", f.desc.name), "counter")
            }
        };
        let e = fams.entry(name).or_default();
        e.kind = kind;
        e.help = f.desc.help.to_owned();
        e.sources.insert(source.to_owned());
        for s in &f.samples {
            e.labels
                .extend(s.labels.iter().map(|(k, _)| (*k).to_owned()));
        }
    }
}

/// The families of a prometheus-client registry (label sync, the daemon's own), from its text.
fn note_registry(
    fams: &mut BTreeMap<String, FamilyDoc>,
    reg: &prometheus_client::registry::Registry,
    source: &str,
) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, reg).unwrap();
    let mut helps = BTreeMap::new();
    for l in text.lines() {
        if let Some(r) = l.strip_prefix("# HELP ") {
            let (n, h) = r.split_once(' ').unwrap_or((r, ""));
            helps.insert(n.to_owned(), h.to_owned());
        }
        if let Some(r) = l.strip_prefix("# TYPE ") {
            let (n, t) = r.split_once(' ').unwrap();
            let (name, kind) = match t {
                "counter" => (format!("{n}_total"), "counter"),
                _ => (n.to_owned(), "gauge"),
            };
            let e = fams.entry(name).or_default();
            e.kind = kind;
            e.help = helps.get(n).cloned().unwrap_or_default();
            e.sources.insert(source.to_owned());
        }
        if !l.starts_with('#')
            && let Some((head, _)) = l.split_once('{')
        {
            let name = head.to_owned();
            if let Some(e) = fams.get_mut(&name) {
                let body = l.split_once('{').unwrap().1;
                let body = body.split_once('}').unwrap().0;
                for pair in body.split(',') {
                    if let Some((k, _)) = pair.split_once('=') {
                        e.labels.insert(k.to_owned());
                    }
                }
            }
        }
    }
}

/// Every family the code exports, from scrapes of every fixture with every source.
fn computed_families() -> BTreeMap<String, FamilyDoc> {
    let mut fams = BTreeMap::new();
    let doubles = nvml_cases();
    for root in all_roots() {
        let host = HostRoot::new(&root).unwrap();
        let name = name_of(&root);
        let nvml = doubles
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| nvml_handle(&host, d));
        let report = match &nvml {
            Some(h) => discover::discover(
                &host,
                &Options::default(),
                &discover::Evidence::with_nvml(h.clone()),
            ),
            None => discover::discover(&host, &Options::default(), &Default::default()),
        };
        let mut sink = Sink::default();
        metrics::report::collect(&report, &mut sink);
        note_sink(&mut fams, &sink, "report");
        let mut sources = metrics::default_sources();
        if let Some(h) = &nvml {
            sources.push(Arc::new(gpuscout::nvml::source::NvmlSource::new(h.clone())));
        }
        let ctx = ScrapeContext {
            root: host.clone(),
            report: Arc::new(report),
        };
        for s in &sources {
            let mut sink = Sink::default();
            let _ = s.collect(&ctx, &mut sink);
            note_sink(&mut fams, &sink, s.name());
        }
        // The scrape-health series come from the pass itself.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(ctx.report.clone());
        let snap = rt.block_on(async {
            let e = metrics::Exporter::new(host, rx, sources, metrics::ExporterConfig::default());
            e.scrape().await.expect("pass")
        });
        let mut rest = Sink::default();
        for f in snap.sink.families() {
            if !fams.contains_key(&format!("gpuscout_{}", f.desc.name))
                && !fams.contains_key(&format!("gpuscout_{}_total", f.desc.name))
            {
                for s in &f.samples {
                    rest.push(f.desc, s.labels.clone(), s.value);
                }
            }
        }
        note_sink(&mut fams, &rest, "every source");
    }
    // Label sync registers its own families (served after the snapshot, never cached).
    let m = gpuscout::k8s::SyncMetrics::new();
    m.sync_result("applied");
    m.write("apply");
    m.request("2xx");
    m.event("posted");
    m.mark_synced();
    let mut reg = prometheus_client::registry::Registry::default();
    m.register(&mut reg);
    note_registry(&mut fams, &reg, "label sync");
    // The daemon's own families: HTTP connections and the label hold (one GPU held).
    let mut reg = prometheus_client::registry::Registry::default();
    let conns = gpuscout::httpconn::ConnMetrics::default();
    conns.register(&mut reg);
    let gate = gpuscout::httpconn::Gate::new(gpuscout::httpconn::Limits::default(), conns);
    gate.closed(gpuscout::httpconn::Timeout::Idle);
    let mut hold = gpuscout::hold::LabelHold::new(Duration::from_secs(600));
    let report = discover::discover(
        &hosts_root("dual-vendor"),
        &Options::default(),
        &Default::default(),
    );
    let now = tokio::time::Instant::now();
    let listing = gpuscout::hold::Listing::Unknown;
    hold.apply(&mut report.clone(), &listing, &LabelConfig::default(), now);
    let mut degraded = report.clone();
    degraded.gpus[0].unread.push(gpuscout::model::Unread {
        path: "/sys/bus/pci/devices/x/device".into(),
        error: "Input/output error".into(),
    });
    hold.apply(&mut degraded, &listing, &LabelConfig::default(), now);
    reg.register_collector(Box::new(hold.gauge()));
    note_registry(&mut fams, &reg, "serve");
    fams
}

#[test]
fn metrics_reference_matches_the_code() {
    let fams = computed_families();
    assert!(
        fams.contains_key("gpuscout_gpu_xid_errors_total")
            && fams.contains_key("gpuscout_label_sync_total"),
        "the scrape did not reach NVML or label sync: {:?}",
        fams.keys().collect::<Vec<_>>()
    );
    let mut out =
        String::from("| family | type | labels | sources | help |\n|---|---|---|---|---|\n");
    for (name, f) in &fams {
        let labels = if f.labels.is_empty() {
            "—".to_owned()
        } else {
            f.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sources = f
            .sources
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{name}` | {} | {labels} | {sources} | {} |\n",
            f.kind,
            f.help.replace('|', "\\|")
        ));
    }
    sync_section("docs/reference/metrics.md", "metric-families", &out);
}

pub(crate) fn deploy_python() -> PathBuf {
    if let Some(p) = std::env::var_os("GPUSCOUT_DEPLOY_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} not found: run scripts/install-deps-deploy.sh (or set GPUSCOUT_DEPLOY_PYTHON)",
        venv.display()
    );
    venv
}

const VALIDATE: &str = r#"
import json, re, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
bad = 0
first = None
for path in sys.argv[2:]:
    text = open(path).read()
    if path.endswith(".snap"):
        text = text.split("---\n", 2)[2]
        text = text.replace('"[time]"', '"2026-01-01T00:00:00Z"')
    doc = json.loads(text)
    first = first or doc
    for e in v.iter_errors(doc):
        bad += 1
        print(f"{path}: {list(e.absolute_path)}: {e.message}")
# Negative controls: the schema must refuse a renamed field, an unknown status and a bad time.
import copy
for name, mutate in [
    ("extra field", lambda d: d["host"].__setitem__("kernal", "x")),
    ("unknown status", lambda d: d.__setitem__("gpus", [dict(d["gpus"][0], status="broken")] if d["gpus"] else [{"status": "broken"}])),
    ("bad time", lambda d: d.__setitem__("generated_at", "yesterday")),
    ("wrong apiVersion", lambda d: d.__setitem__("apiVersion", "gpuscout.io/v0")),
]:
    d = copy.deepcopy(first)
    mutate(d)
    if v.is_valid(d):
        bad += 1
        print(f"negative control accepted: {name}")
print(f"validated {len(sys.argv) - 2} reports, {bad} problems")
sys.exit(1 if bad else 0)
"#;

#[test]
fn report_schema_validates_every_report() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/integration/snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| name_of(p).starts_with("report@"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "golden reports: {files:?}");
    // Reports the goldens do not cover: the verdict and metrics fixtures (problems, unread files),
    // and NVML-enriched ones, as the binary prints them.
    let dir = tempfile::tempdir().unwrap();
    let mut reports: Vec<(String, Report)> = all_roots()
        .iter()
        .map(|r| {
            (
                name_of(r),
                discover::discover(
                    &HostRoot::new(r).unwrap(),
                    &Options::default(),
                    &Default::default(),
                ),
            )
        })
        .collect();
    for (name, d) in nvml_cases() {
        let root = hosts_root(name);
        let mut r = discover::discover(
            &root,
            &Options::default(),
            &discover::Evidence::with_nvml(nvml_handle(&root, &d)),
        );
        r.node = Some("gpu-node-1".into());
        reports.push((format!("{name}-nvml"), r));
    }
    for (name, r) in &reports {
        let p = dir.path().join(format!("{name}.json"));
        std::fs::write(&p, serde_json::to_vec_pretty(r).unwrap()).unwrap();
        files.push(p);
    }
    let out = Command::new(deploy_python())
        .arg("-c")
        .arg(VALIDATE)
        .arg(repo().join("docs/reference/report.schema.json"))
        .args(&files)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "report schema check failed:\n{text}");
    assert!(
        text.contains(&format!("validated {} reports, 0 problems", files.len())),
        "{text}"
    );
}

/// `rust-version` in Cargo.toml is the highest `rust-version` any dependency declares.
#[test]
fn rust_version_covers_every_dependency() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parse = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let mut max = (vec![0], String::new());
    let mut ours = None;
    for p in m["packages"].as_array().unwrap() {
        let Some(rv) = p["rust_version"].as_str() else {
            continue;
        };
        if p["name"] == "gpuscout" {
            ours = Some(parse(rv));
            continue;
        }
        let v = parse(rv);
        if v > max.0 {
            max = (v, format!("{} {}", p["name"], p["version"]));
        }
    }
    let mut ours = ours.expect("gpuscout has a rust-version");
    let mut need = max.0.clone();
    ours.resize(3, 0);
    need.resize(3, 0);
    assert_eq!(
        ours, need,
        "Cargo.toml rust-version must be the highest of the dependencies' ({need:?}, from {})",
        max.1
    );
}

/// A scratch git repository holding what `scripts/release.sh` touches, committed.
pub(crate) fn release_sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in ["Cargo.toml", "Cargo.lock", "CHANGELOG.md"] {
        std::fs::copy(repo().join(f), d.join(f)).unwrap();
    }
    std::fs::create_dir_all(d.join("scripts")).unwrap();
    std::fs::create_dir_all(d.join("charts")).unwrap();
    std::fs::copy(
        repo().join("scripts/release.sh"),
        d.join("scripts/release.sh"),
    )
    .unwrap();
    let cp = Command::new("cp")
        .arg("-r")
        .arg(repo().join("charts/gpuscout"))
        .arg(d.join("charts/"))
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::write(d.join(".gitignore"), "/dist\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "-qm",
            "base",
        ],
    ] {
        let st = Command::new("git")
            .args(args)
            .current_dir(d)
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    }
    dir
}

fn release(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("bash")
        .arg("scripts/release.sh")
        .args(args)
        .current_dir(dir)
        .env("GPUSCOUT_DEPLOY_PYTHON", deploy_python())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `scripts/release.sh` up to the push: versions, CHANGELOG, commit and tag, image tags, chart
/// package; its refusals; and `--dry-run` leaving the checkout alone.
#[test]
fn release_script_runs_up_to_the_push() {
    let sb = release_sandbox();
    let d = sb.path();
    let changelog_before = std::fs::read_to_string(d.join("CHANGELOG.md")).unwrap();
    let (rc, out) = release(d, &["9.8.7", "--no-image", "--date", "2030-01-02"]);
    assert_eq!(rc, 0, "{out}");
    let cargo = std::fs::read_to_string(d.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("\nversion = \"9.8.7\"\n"), "{cargo}");
    let lock = std::fs::read_to_string(d.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"gpuscout\"\nversion = \"9.8.7\"\n"));
    let chart = std::fs::read_to_string(d.join("charts/gpuscout/Chart.yaml")).unwrap();
    assert!(
        chart.contains("\nversion: 9.8.7\n") && chart.contains("\nappVersion: \"9.8.7\"\n"),
        "{chart}"
    );
    let changelog = std::fs::read_to_string(d.join("CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains("## [Unreleased]\n\n## [9.8.7] - 2030-01-02\n"),
        "{changelog}"
    );
    // The old Unreleased entries now sit under the release heading, unchanged.
    let old_entries = changelog_before.split("## [Unreleased]").nth(1).unwrap();
    assert!(changelog.contains(&format!("## [9.8.7] - 2030-01-02{old_entries}")));
    let notes = std::fs::read_to_string(d.join("dist/release-notes-9.8.7.md")).unwrap();
    assert!(
        notes.starts_with("# gpuscout 9.8.7 (2030-01-02)") && notes.contains("### Added"),
        "{notes}"
    );
    let tag = Command::new("git")
        .args(["tag", "-l", "v9.8.7"])
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tag.stdout).trim(), "v9.8.7");
    let status = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(status.stdout.is_empty(), "release left changes uncommitted");
    let tgz = d.join("dist/gpuscout-9.8.7.tgz");
    let packaged = Command::new("tar")
        .arg("-xzOf")
        .arg(&tgz)
        .arg("gpuscout/Chart.yaml")
        .output()
        .unwrap();
    let packaged = String::from_utf8_lossy(&packaged.stdout);
    // Helm writes Chart.yaml anew in the archive (unquoted appVersion).
    assert!(
        packaged.contains("\nversion: 9.8.7")
            && (packaged.contains("appVersion: 9.8.7")
                || packaged.contains("appVersion: \"9.8.7\"")),
        "{packaged}"
    );
    for line in [
        "image:  ghcr.io/gpuscout/gpuscout:9.8.7 (not built: --no-image)",
        "image:  ghcr.io/gpuscout/gpuscout:9.8 (not built: --no-image)",
        "buildah push ghcr.io/gpuscout/gpuscout:9.8.7",
        "helm push",
        "git push origin v9.8.7",
        "not pushed",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    // Refusals: the same version again, a version below, a dirty tree, bad input.
    let (rc, out) = release(d, &["9.8.7", "--no-image"]);
    assert_eq!(rc, 1, "{out}");
    let (rc, out) = release(d, &["1.0.0", "--no-image"]);
    assert!(rc == 1 && out.contains("not above"), "{out}");
    let (rc, _) = release(d, &["v10.0.0"]);
    assert_eq!(rc, 1);
    std::fs::write(d.join("Cargo.toml"), format!("{cargo}\n# edit\n")).unwrap();
    let (rc, out) = release(d, &["10.0.0", "--no-image"]);
    assert!(rc == 1 && out.contains("uncommitted"), "{out}");

    // --dry-run: a fresh sandbox stays as it was; the package still lands in dist/.
    let sb = release_sandbox();
    let d = sb.path();
    let head = |d: &Path| {
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(d)
            .output()
            .unwrap()
            .stdout
    };
    let before = head(d);
    let (rc, out) = release(d, &["0.9.0", "--no-image", "--dry-run"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(head(d), before);
    assert_eq!(
        std::fs::read_to_string(d.join("Cargo.toml")).unwrap(),
        std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()
    );
    let tags = Command::new("git")
        .args(["tag"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(tags.stdout.is_empty(), "dry run left a tag");
    assert!(
        d.join("dist")
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".tgz") })
    );
}

fn tracked_files() -> Vec<PathBuf> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(repo())
        .output()
        .expect("git (the docs checks list the repository's files with git ls-files)");
    assert!(out.status.success(), "git ls-files failed");
    out.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| repo().join(String::from_utf8_lossy(p).as_ref()))
        .filter(|p| p.is_file())
        .collect()
}

/// The repository is complete on its own: no file points into the old shared folder or cites
/// the old contract's sections.
#[test]
fn no_file_points_outside_the_repository() {
    let needles = [
        concat!("../", "shared"),
        concat!("/work/", "shared"),
        concat!("shared/", "research"),
        concat!("shared/", "data"),
        concat!("shared/", "design"),
        concat!("SPEC ", "§"),
        concat!("SPEC ", "\\u00a7"),
        concat!("SPEC", ".md"),
    ];
    let mut hits = Vec::new();
    for p in tracked_files() {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue; // binary
        };
        // Vendored upstream protos (proto/*/README.md) keep their own comments: the kubelet's
        // PodResources API links the CDI specification's own spec file, not ours.
        let vendored = p.starts_with(repo().join("proto"));
        for n in needles {
            if vendored && n == concat!("SPEC", ".md") {
                continue;
            }
            if let Some(i) = text.find(n) {
                let line = text[..i].lines().count();
                hits.push(format!(
                    "{}:{line}: {n}",
                    p.strip_prefix(repo()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "files point outside the repository:\n{}",
        hits.join("\n")
    );
}

/// Every relative link in the Markdown files leads to a file or directory of the repository.
#[test]
fn markdown_links_resolve() {
    let mut broken = Vec::new();
    for p in tracked_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter(|p| !p.starts_with(repo().join("fuzz")))
    {
        let text = std::fs::read_to_string(&p).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if target.is_empty()
                || target.contains("://")
                || target.starts_with('#')
                || target.starts_with("mailto:")
                || target.contains(' ')
                || target.contains(['[', '*'])
            {
                continue;
            }
            let path = target.split('#').next().unwrap();
            if !p.parent().unwrap().join(path).exists() {
                broken.push(format!(
                    "{}: {target}",
                    p.strip_prefix(repo()).unwrap().display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
