//! The command-line reference as Markdown, generated from the clap command tree of
//! [`crate::cli::Cli`] so that `docs/reference/cli.md` cannot drift from the flags: the
//! integration test `docs::cli_reference_is_generated_from_clap` compares the two, and
//! `UPDATE_DOCS=1` rewrites the file. No I/O here.

use clap::{Arg, ArgAction, Command, CommandFactory};
use std::fmt::Write as _;

/// Header of the generated file.
pub const GENERATED_NOTE: &str = "<!-- Generated from the clap command tree (agent/src/clidoc.rs). \
Do not edit: run `UPDATE_DOCS=1 cargo test --test integration docs::` to rewrite it. -->";

/// The whole `docs/reference/cli.md`.
pub fn markdown() -> String {
    let root = crate::cli::Cli::command();
    let mut out = String::new();
    let _ = writeln!(out, "# Command-line reference\n\n{GENERATED_NOTE}\n");
    let _ = writeln!(out, "{}\n", long_about(&root));
    let _ = writeln!(out, "```text\n{}\n```\n", usage(&root));
    let _ = writeln!(out, "| command | what it does |\n|---|---|");
    for sub in visible_subcommands(&root) {
        let _ = writeln!(
            out,
            "| [`gpuscout {}`](#gpuscout-{}) | {} |",
            sub.get_name(),
            sub.get_name(),
            cell(&about(sub))
        );
    }
    let _ = writeln!(
        out,
        "\nExit status: 0 on success; 1 from `check` when a GPU is not `ok`; 2 on a usage or \
         configuration error (one line on stderr).\n"
    );
    let _ = writeln!(
        out,
        "## Global options\n\nAccepted by every command, before or after its name.\n"
    );
    args_table(&mut out, &root, "###");
    for sub in visible_subcommands(&root) {
        let _ = writeln!(out, "## gpuscout {}\n", sub.get_name());
        let _ = writeln!(out, "{}\n", long_about(sub));
        let _ = writeln!(
            out,
            "```text\n{}\n```\n",
            usage(&sub.clone().bin_name(format!("gpuscout {}", sub.get_name())))
        );
        if own_args(sub).next().is_some() {
            args_table(&mut out, sub, "###");
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn visible_subcommands(c: &Command) -> impl Iterator<Item = &Command> {
    c.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// Arguments a command defines itself (not `--help`/`--version`, not hidden).
fn own_args(c: &Command) -> impl Iterator<Item = &Arg> {
    c.get_arguments().filter(|a| {
        !a.is_hide_set()
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
            && !matches!(a.get_id().as_str(), "help" | "version")
    })
}

/// The flags of `c` grouped by help heading, headings in [`crate::cli::HEADINGS`] order.
fn args_table(out: &mut String, c: &Command, level: &str) {
    let mut headings: Vec<Option<&str>> = Vec::new();
    for a in own_args(c) {
        let h = a.get_help_heading();
        if !headings.contains(&h) {
            headings.push(h);
        }
    }
    let rank = |h: &Option<&str>| {
        h.and_then(|h| crate::cli::HEADINGS.iter().position(|x| *x == h))
            .unwrap_or(usize::MAX)
    };
    headings.sort_by_key(rank);
    for h in headings {
        let _ = writeln!(out, "{level} {}\n", h.unwrap_or("Options"));
        let _ = writeln!(
            out,
            "| flag | environment | default | description |\n|---|---|---|---|"
        );
        for a in own_args(c).filter(|a| a.get_help_heading() == h) {
            let env = a
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let default: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if default.is_empty() {
                String::new()
            } else {
                format!("`{}`", default.join(","))
            };
            let mut help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let values: Vec<String> = a
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| format!("`{}`", v.get_name()))
                .collect();
            if !values.is_empty() && !matches!(a.get_action(), ArgAction::SetTrue) {
                let _ = write!(help, " Values: {}.", values.join(", "));
            }
            let _ = writeln!(
                out,
                "| `{}` | {env} | {default} | {} |",
                flag(a),
                cell(&help)
            );
        }
        out.push('\n');
    }
}

/// `--listen <LISTEN>`, `--compat-nvidia-gfd`, `<SHELL>`.
fn flag(a: &Arg) -> String {
    let value = a
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
    let takes_value = !matches!(
        a.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
    );
    match a.get_long() {
        Some(l) if takes_value => format!("--{l} <{value}>"),
        Some(l) => format!("--{l}"),
        None => format!("<{value}>"),
    }
}

fn about(c: &Command) -> String {
    c.get_about().map(|s| s.to_string()).unwrap_or_default()
}

fn long_about(c: &Command) -> String {
    c.get_long_about()
        .or(c.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn usage(c: &Command) -> String {
    c.clone().render_usage().to_string()
}

/// One Markdown table cell: one line, `|` escaped.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Every long flag name (without `--`) of a command and its subcommands, for drift checks.
pub fn all_flags() -> std::collections::BTreeSet<String> {
    fn walk(c: &Command, out: &mut std::collections::BTreeSet<String>) {
        for a in own_args(c) {
            if let Some(l) = a.get_long() {
                out.insert(l.to_owned());
            }
        }
        for s in visible_subcommands(c) {
            walk(s, out);
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(&crate::cli::Cli::command(), &mut out);
    out
}
