//! Output formats of `discover`: a readable table, JSON (`docs/reference/report.md`) and YAML.

use crate::model::Report;
use std::fmt::Write as _;

/// Output format of `discover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// A report that could not be serialised (never expected for our own types).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("YAML encoding failed: {0}")]
    Yaml(#[from] serde_norway::Error),
}

/// Render the report.
pub fn render(report: &Report, format: Format) -> Result<String, Error> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Yaml => serde_norway::to_string(report)?,
        Format::Table => table(report),
    })
}

fn human_bytes(b: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let g = b as f64 / GIB;
    if g >= 1.0 {
        format!("{g:.1} GiB")
    } else {
        format!("{} MiB", b / (1024 * 1024))
    }
}

fn table(r: &Report) -> String {
    let mut out = String::new();
    host_lines(&mut out, r);
    if r.gpus.is_empty() {
        let _ = writeln!(out, "\nNo GPUs found.");
    } else {
        gpu_table(&mut out, r);
        problem_lines(&mut out, r);
    }
    let unread: usize = r.host.unread.len() + r.gpus.iter().map(|g| g.unread.len()).sum::<usize>();
    if unread > 0 {
        let _ = writeln!(
            out,
            "\n{unread} host file(s) could not be read (see --format json)."
        );
    }
    if !r.labels.is_empty() {
        let _ = writeln!(out, "\nLabels:");
        for (k, v) in &r.labels {
            let _ = writeln!(out, "  {k}={v}");
        }
    }
    out
}

/// `Host: <os>, kernel <k>` and, on Talos, its version and extensions.
fn host_lines(out: &mut String, r: &Report) {
    let os = r.host.os.as_deref().unwrap_or("unknown OS");
    let kernel = r.host.kernel.as_deref().unwrap_or("unknown kernel");
    let _ = writeln!(out, "Host: {os}, kernel {kernel}");
    if let Some(t) = &r.host.talos {
        let exts: Vec<String> = t
            .extensions
            .iter()
            .map(|e| format!("{} {}", e.name, e.version))
            .collect();
        let _ = writeln!(
            out,
            "Talos {}: extensions: {}",
            t.version,
            if exts.is_empty() {
                "none".to_owned()
            } else {
                exts.join(", ")
            }
        );
    }
}

/// One row per GPU, columns padded to their widest cell (the last one is not padded).
fn gpu_table(out: &mut String, r: &Report) {
    let header = [
        "PCI", "VENDOR", "MODEL", "DRIVER", "CARD", "RENDER", "MEMORY", "STATUS",
    ];
    let rows: Vec<[String; 8]> = r
        .gpus
        .iter()
        .map(|g| {
            [
                g.pci_address.to_string(),
                g.vendor.to_string(),
                g.model.clone(),
                g.driver.clone().unwrap_or_else(|| "-".into()),
                g.card.clone().unwrap_or_else(|| "-".into()),
                g.render.clone().unwrap_or_else(|| "-".into()),
                g.memory_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "-".into()),
                g.status.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        s
    };
    out.push('\n');
    let _ = writeln!(out, "{}", line(&header.map(str::to_owned)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
}

/// Every problem of every GPU, after a blank line: the same lines `check` prints on stderr.
fn problem_lines(out: &mut String, r: &Report) {
    let mut first = true;
    for g in &r.gpus {
        for p in &g.problems {
            if std::mem::take(&mut first) {
                out.push('\n');
            }
            let _ = writeln!(out, "{}", crate::verdict::problem_line(g, p));
        }
    }
}
