//! Node Feature Discovery outputs, for clusters where NFD owns the Node labels.
//!
//! - `nfd-file`: a local-source features file (one `key=value` per line) in nfd-worker's
//!   `features.d/` directory, written atomically (temp file in the same directory, fsync, rename),
//!   so nfd-worker never reads half a file. The file is left in place on shutdown.
//! - `nodefeature`: an `nfd.k8s-sigs.io/v1alpha1` NodeFeature object named `gpuscout-<node>`,
//!   labelled `nfd.node.kubernetes.io/node-name=<node>`, which nfd-master merges into the Node.
//!
//! Either way nfd-master only publishes keys in namespaces it allows: add our prefix with
//! `-extra-label-ns` (NFD docs, "nfd-master command line reference").

use super::Error;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// `apiVersion` of NFD's NodeFeature.
pub const NODEFEATURE_API_VERSION: &str = "nfd.k8s-sigs.io/v1alpha1";

/// The features file text: `key=value` lines, sorted.
pub fn nfd_file_text(labels: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    for (k, v) in labels {
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push('\n');
    }
    s
}

/// Write `text` to `path` atomically: a temp file next to it, fsync, rename over `path`.
pub fn write_nfd_file(path: &Path, text: &str) -> Result<(), Error> {
    let err = |source| Error::File {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gpuscout".to_owned());
    // A leading dot: nfd-worker skips hidden files, so the temp file is never read as features.
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Name of our NodeFeature object for `node`.
pub fn nodefeature_name(node: &str) -> String {
    format!("gpuscout-{node}")
}

/// The NodeFeature object we apply for `node`.
pub fn nodefeature_body(
    node: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": NODEFEATURE_API_VERSION,
        "kind": "NodeFeature",
        "metadata": {
            "name": nodefeature_name(node),
            "namespace": namespace,
            "labels": {"nfd.node.kubernetes.io/node-name": node},
        },
        "spec": {
            "features": {"flags": {}, "attributes": {}, "instances": {}},
            "labels": labels,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_text_is_sorted_key_value_lines() {
        let mut m = BTreeMap::new();
        m.insert("gpuscout.io/b".to_owned(), "2".to_owned());
        m.insert("gpuscout.io/a".to_owned(), "1".to_owned());
        assert_eq!(nfd_file_text(&m), "gpuscout.io/a=1\ngpuscout.io/b=2\n");
    }

    #[test]
    fn nodefeature_shape() {
        let mut m = BTreeMap::new();
        m.insert("gpuscout.io/present".to_owned(), "true".to_owned());
        let b = nodefeature_body("n1", "gpu-system", &m);
        assert_eq!(b["metadata"]["name"], "gpuscout-n1");
        assert_eq!(
            b["metadata"]["labels"]["nfd.node.kubernetes.io/node-name"],
            "n1"
        );
        assert_eq!(b["spec"]["labels"]["gpuscout.io/present"], "true");
    }
}
