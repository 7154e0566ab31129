//! Where the label set goes (`--labels`). No I/O.

/// Where the label set goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelMode {
    /// Server-side apply of the labels on this Node (field manager `gpuscout`).
    #[default]
    Node,
    /// An NFD local-source features file that nfd-worker turns into labels.
    NfdFile,
    /// An `nfd.k8s-sigs.io/v1alpha1` NodeFeature object that nfd-master turns into labels.
    Nodefeature,
    /// No labels at all (metrics only).
    Off,
}
