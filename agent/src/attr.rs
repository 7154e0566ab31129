//! The one way to read an attribute that may be missing and record why one could not be used.
//!
//! Used by `host` (kernel release, os-release, `/proc/modules`), `pci` (the attributes of each
//! GPU function) and `vendors::amd` (amdgpu and KFD attributes). Reads through [`HostRoot`]
//! only. The rule: a file that does not exist is not an error for an optional attribute (the
//! field stays `None`, nothing is recorded); a file that exists but cannot be read (permission,
//! I/O, symlink loop, not text) or does not parse is recorded as an [`Unread`] entry of the
//! report, with the host path and the reason.

use crate::hostroot::{Error, HostRoot, Resolved};
use crate::model::Unread;
use crate::parse::ParseError;

/// A read error as a report entry: the host path and the reason without the path.
pub fn unread_of(e: &Error) -> Unread {
    let error = match e {
        // The reason of a malformed value is the parser's message, which has ": " in it.
        Error::Malformed { reason, .. } => reason.clone(),
        _ => e
            .to_string()
            .rsplit(": ")
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    Unread {
        path: e.path().to_owned(),
        error,
    }
}

/// Reads optional attributes below one [`HostRoot`], appending what exists but cannot be used
/// to `unread`.
pub struct Reader<'a> {
    pub root: &'a HostRoot,
    pub unread: &'a mut Vec<Unread>,
}

impl<'a> Reader<'a> {
    pub fn new(root: &'a HostRoot, unread: &'a mut Vec<Unread>) -> Self {
        Self { root, unread }
    }

    /// Record one entry.
    pub fn record(&mut self, u: Unread) {
        self.unread.push(u);
    }

    /// The value of a read that may fail: "no such file" is `None` silently, any other error is
    /// recorded and `None`.
    pub fn optional<T>(&mut self, r: Result<T, Error>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                self.unread.push(unread_of(&e));
                None
            }
        }
    }

    /// The value of a read that should succeed: every error, "no such file" included, is
    /// recorded and `None`.
    pub fn required<T>(&mut self, r: Result<T, Error>) -> Option<T> {
        r.map_err(|e| self.unread.push(unread_of(&e))).ok()
    }

    /// Read attribute `name` of `dir` and parse it with `f`: absent is `None` silently, unreadable
    /// or malformed is recorded.
    pub fn attr<T>(
        &mut self,
        dir: &Resolved,
        name: &str,
        f: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        let text = self.optional(self.root.read_attr(dir, name))?;
        self.parsed(dir, name, f(&text))
    }

    /// Like [`attr`](Self::attr), but a missing file is recorded too.
    pub fn required_attr<T>(
        &mut self,
        dir: &Resolved,
        name: &str,
        f: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        let text = self.required(self.root.read_attr(dir, name))?;
        self.parsed(dir, name, f(&text))
    }

    /// A trimmed, non-empty string attribute (absent or empty: `None`).
    pub fn text(&mut self, dir: &Resolved, name: &str) -> Option<String> {
        self.attr(dir, name, |s| Ok(s.trim().to_owned()))
            .filter(|s| !s.is_empty())
    }

    fn parsed<T>(&mut self, dir: &Resolved, name: &str, r: Result<T, ParseError>) -> Option<T> {
        r.map_err(|e| self.unread.push(unread_of(&e.at(dir, name))))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let tmp = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = tmp.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let root = HostRoot::new(tmp.path()).unwrap();
        (tmp, root)
    }

    #[test]
    fn absent_is_none_and_not_recorded() {
        let (_t, root) = root_with(&[("sys/dev/present", "0x10de\n")]);
        let dir = root.resolve("sys/dev").unwrap();
        let mut unread = Vec::new();
        let mut r = Reader::new(&root, &mut unread);
        assert_eq!(r.attr(&dir, "missing", parse::hex_u16), None);
        assert_eq!(r.text(&dir, "missing"), None);
        assert_eq!(r.optional(root.read_string("etc/nothing")), None);
        assert_eq!(r.attr(&dir, "present", parse::hex_u16), Some(0x10de));
        assert!(unread.is_empty(), "{unread:?}");
    }

    #[test]
    fn required_records_a_missing_file() {
        let (_t, root) = root_with(&[("sys/dev/x", "1")]);
        let dir = root.resolve("sys/dev").unwrap();
        let mut unread = Vec::new();
        let mut r = Reader::new(&root, &mut unread);
        assert_eq!(r.required_attr(&dir, "device", parse::hex_u16), None);
        assert_eq!(unread.len(), 1);
        assert_eq!(unread[0].path, "/sys/dev/device");
        assert_eq!(unread[0].error, "not found");
    }

    #[test]
    fn malformed_is_recorded_with_the_value() {
        let (_t, root) = root_with(&[("sys/dev/device", "zz\n"), ("sys/dev/empty", " \n")]);
        let dir = root.resolve("sys/dev").unwrap();
        let mut unread = Vec::new();
        let mut r = Reader::new(&root, &mut unread);
        assert_eq!(r.required_attr(&dir, "device", parse::hex_u16), None);
        assert_eq!(r.attr(&dir, "device", parse::hex_u16), None);
        assert_eq!(
            r.text(&dir, "empty"),
            None,
            "empty text is absent, not an error"
        );
        assert_eq!(unread.len(), 2);
        for u in &unread {
            assert_eq!(u.path, "/sys/dev/device");
            assert!(u.error.starts_with("malformed value \"zz\""), "{}", u.error);
        }
    }

    #[test]
    fn unreadable_is_recorded() {
        let (_t, root) = root_with(&[("sys/dev/x", "1")]);
        let dir = root.resolve("sys/dev").unwrap();
        let mut unread = Vec::new();
        let mut r = Reader::new(&root, &mut unread);
        // A directory where a file is expected exists but cannot be read as an attribute.
        std::fs::create_dir(_t.path().join("sys/dev/subdir")).unwrap();
        assert_eq!(r.attr(&dir, "subdir", parse::hex_u16), None);
        assert_eq!(unread.len(), 1);
        assert_eq!(unread[0].path, "/sys/dev/subdir");
        assert_ne!(unread[0].error, "not found");
    }
}
