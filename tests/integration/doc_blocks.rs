//! Every shell block of `README.md` and `docs/install.md` that can run on a CI machine is run
//! here; the others are skipped with the reason their info string gives (see the table at the top
//! of `docs/install.md`). An info string this file does not know fails the test, so a new kind of
//! block has to be declared here first.
//!
//! In these runs `cargo run --release -- ARGS` is a shell function that runs the `gpuscout`
//! binary this test suite built (same source): a nested cargo would wait for the build lock held
//! by the cargo that runs the tests. Any other `cargo` call in a runnable block fails.

#![allow(clippy::disallowed_methods)] // tests read the docs directly

use std::path::Path;
use std::process::Command;

/// A fenced block: its info string and its text.
struct Block {
    file: &'static str,
    line: usize,
    info: Vec<String>,
    text: String,
}

fn blocks(file: &'static str) -> Vec<Block> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => {
                    cur = Some(Block {
                        file,
                        line: i + 1,
                        info: rest.split_whitespace().map(str::to_owned).collect(),
                        text: String::new(),
                    })
                }
            }
        } else if let Some(b) = cur.as_mut() {
            b.text.push_str(line.trim_start());
            b.text.push('\n');
        }
    }
    assert!(cur.is_none(), "{file}: unclosed code block");
    out.into_iter()
        .filter(|b| {
            matches!(
                b.info.first().map(String::as_str),
                Some("sh" | "bash" | "shell")
            )
        })
        .collect()
}

/// Why a block is not run, or `None` when it is. Panics on an unknown marker.
fn skip_reason(b: &Block) -> Option<&'static str> {
    match b.info.get(1).map(String::as_str) {
        None | Some("release") => None,
        Some("cluster") => Some("needs a running cluster (kubectl, helm, talosctl)"),
        Some("registry") => Some("pulls from or pushes to a container registry"),
        Some("network") => Some("calls a public service on the internet"),
        Some("root") => Some(
            "needs root, debootstrap and buildah and takes minutes; scripts/build-image.sh runs in deploy::image_builds_without_a_registry_and_discovers_inside",
        ),
        Some("suite") => Some("it is the test suite this test belongs to"),
        Some(other) => panic!(
            "{}:{}: unknown shell block marker {other:?}; declare it in tests/integration/doc_blocks.rs",
            b.file, b.line
        ),
    }
}

const PRELUDE: &str = r#"
cargo() {
    if [ "${1:-}" = run ] && [ "${2:-}" = --release ] && [ "${3:-}" = -- ]; then
        shift 3
        "$GPUSCOUT_BIN" "$@"
        return
    fi
    echo "doc block runs 'cargo $*': only 'cargo run --release -- ...' is provided here" >&2
    return 97
}
"#;

fn run_block(b: &Block) -> String {
    let sandbox;
    let dir = if b.info.get(1).map(String::as_str) == Some("release") {
        sandbox = crate::docs::release_sandbox();
        sandbox.path().to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
    };
    let script = format!("set -euo pipefail\n{PRELUDE}\n{}", b.text);
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .env("GPUSCOUT_BIN", env!("CARGO_BIN_EXE_gpuscout"))
        .env("GPUSCOUT_DEPLOY_PYTHON", crate::docs::deploy_python())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}:{}: shell block failed ({}):\n{}\n--- output ---\n{text}",
        b.file,
        b.line,
        out.status,
        b.text
    );
    text
}

fn run_file(file: &'static str) -> (usize, usize) {
    let (mut ran, mut skipped) = (0, 0);
    for b in blocks(file) {
        match skip_reason(&b) {
            Some(why) => {
                println!("{file}:{}: skipped ({}): {why}", b.line, b.info.join(" "));
                skipped += 1;
            }
            None => {
                let out = run_block(&b);
                assert!(!out.trim().is_empty(), "{file}:{}: printed nothing", b.line);
                println!("{file}:{}: ran", b.line);
                ran += 1;
            }
        }
    }
    (ran, skipped)
}

#[test]
fn readme_shell_blocks_run() {
    let bs = blocks("README.md");
    // The quick start keeps exactly the two set-up commands.
    let cmds: Vec<&str> = bs
        .iter()
        .flat_map(|b| b.text.lines())
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(cmds.len(), 2, "README set-up commands: {cmds:?}");
    assert!(cmds[0].starts_with("cargo run --release -- discover --root tests/fixtures/hosts/"));
    assert_eq!(cmds[1], "scripts/install-deps.sh && scripts/test.sh");
    let (ran, _) = run_file("README.md");
    assert_eq!(ran, 1);
}

#[test]
fn install_md_shell_blocks_run() {
    let (ran, skipped) = run_file("docs/install.md");
    assert!(ran >= 2 && skipped >= 5, "ran {ran}, skipped {skipped}");
}

/// The Kubernetes manifests shown in `docs/install.md` (```yaml blocks with `apiVersion` and
/// `kind`) pass the real `kubernetes-validate --strict` of the test venv.
#[test]
fn install_md_manifests_validate() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/install.md"))
            .unwrap();
    let mut manifests = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            match cur.take() {
                Some(m) => manifests.push(m),
                None if line.trim() == "```yaml" => cur = Some(String::new()),
                None => cur = Some(String::from("\0")),
            }
        } else if let Some(m) = cur.as_mut() {
            m.push_str(line);
            m.push('\n');
        }
    }
    let manifests: Vec<String> = manifests
        .into_iter()
        .filter(|m| !m.starts_with('\0') && m.contains("apiVersion:") && m.contains("\nkind:"))
        .collect();
    assert!(
        manifests.len() >= 2,
        "manifests in install.md: {}",
        manifests.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let validate = crate::docs::deploy_python().with_file_name("kubernetes-validate");
    for (i, m) in manifests.iter().enumerate() {
        let p = dir.path().join(format!("m{i}.yaml"));
        std::fs::write(&p, m).unwrap();
        let out = Command::new(&validate)
            .args(["-k", "1.32.0", "--strict", "--quiet"])
            .arg(&p)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", validate.display()));
        assert!(
            out.status.success(),
            "install.md manifest {i} does not validate:\n{m}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
