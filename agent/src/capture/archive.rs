//! The capture archive: a zstd-compressed tar of a host root (`tar --zstd -xf` unpacks it).
//!
//! Entries are directories, regular files and symbolic links, with relative paths
//! (`sys/bus/pci/devices/0000:01:00.0`). Symlink targets are stored exactly as the host has
//! them (`../../../devices/pci0000:00/...`, or absolute: `HostRoot` resolves those inside the
//! unpacked root). Every missing ancestor directory is added before an entry, so any
//! unpacker recreates the tree. Owner `0:0` and mtime 0 (the agent never reads either);
//! long paths and link targets use GNU tar's long-name records. No I/O of the host here: the
//! caller hands over what it read.

use std::collections::BTreeSet;
use std::io::{self, Write};

/// zstd level: sysfs text compresses well; 19 costs well under a second for a host capture.
const LEVEL: i32 = 19;

/// Writes one capture archive into `W`.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<zstd::Encoder<'static, W>>,
    dirs: BTreeSet<String>,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W) -> io::Result<Self> {
        let enc = zstd::Encoder::new(out, LEVEL)?;
        let mut tar = tar::Builder::new(enc);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Self {
            tar,
            dirs: BTreeSet::new(),
        })
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    /// Add the ancestors of `path` that are not in the archive yet.
    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        let mut missing = Vec::new();
        while let Some(i) = path[end..].find('/') {
            end += i;
            let p = &path[..end];
            if !self.dirs.contains(p) {
                missing.push(p.to_owned());
            }
            end += 1;
        }
        for p in missing {
            self.put_dir(&p, 0o755)?;
        }
        Ok(())
    }

    fn put_dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        if !self.dirs.insert(path.to_owned()) {
            return Ok(());
        }
        let mut h = Self::header(tar::EntryType::Directory, mode | 0o700, 0);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
    }

    /// A directory (`mode` gets owner `rwx`, so an unpacking user can fill it).
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        check(path)?;
        self.parents(path)?;
        self.put_dir(path, mode)
    }

    /// A regular file with `content`.
    pub fn file(&mut self, path: &str, mode: u32, content: &[u8]) -> io::Result<()> {
        check(path)?;
        self.parents(path)?;
        let mut h = Self::header(tar::EntryType::Regular, mode, content.len() as u64);
        self.tar.append_data(&mut h, path, content)
    }

    /// A symbolic link to `target`, kept as written.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        check(path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: symlink target not storable"),
            ));
        }
        self.parents(path)?;
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target)
    }

    /// Finish the tar stream and the zstd frame; returns the writer.
    pub fn finish(self) -> io::Result<W> {
        let enc = self.tar.into_inner()?;
        enc.finish()
    }
}

/// A path the archive may hold: relative, no `..`, no empty or `.` components.
fn check(path: &str) -> io::Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?}: not a relative path inside the root"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, Option<String>, Vec<u8>)> {
        let dec = zstd::Decoder::new(bytes).unwrap();
        let mut ar = tar::Archive::new(dec);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let kind = e.header().entry_type();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, kind, link, data)
            })
            .collect()
    }

    #[test]
    fn links_dirs_and_files_keep_their_shape_and_parents_come_first() {
        let mut w = ArchiveWriter::new(Vec::new()).unwrap();
        let long = format!("sys/devices/{}/vendor", "pci0000:00/0000:00:01.1".repeat(6));
        w.symlink(
            "sys/bus/pci/devices/0000:01:00.0",
            "../../../devices/pci0000:00/0000:00:01.1/0000:01:00.0",
        )
        .unwrap();
        w.symlink("etc/os-release", "/usr/lib/os-release").unwrap();
        w.file(&long, 0o444, b"0x10de\n").unwrap();
        w.dir("sys/module/amdgpu", 0o555).unwrap();
        let bytes = w.finish().unwrap();
        let e = entries(&bytes);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        let pos = |n: &str| {
            names
                .iter()
                .position(|x| *x == n)
                .unwrap_or_else(|| panic!("{n} in {names:?}"))
        };
        assert!(
            pos("sys/") < pos("sys/bus/")
                && pos("sys/bus/pci/devices/") < pos("sys/bus/pci/devices/0000:01:00.0")
        );
        let link = &e[pos("sys/bus/pci/devices/0000:01:00.0")];
        assert_eq!(link.1, tar::EntryType::Symlink);
        assert_eq!(
            link.2.as_deref(),
            Some("../../../devices/pci0000:00/0000:00:01.1/0000:01:00.0")
        );
        assert_eq!(
            e[pos("etc/os-release")].2.as_deref(),
            Some("/usr/lib/os-release")
        );
        assert_eq!(
            e[pos(&long)].3,
            b"0x10de\n",
            "a path past 100 bytes survives"
        );
        assert_eq!(e[pos("sys/module/amdgpu/")].1, tar::EntryType::Directory);
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let mut w = ArchiveWriter::new(Vec::new()).unwrap();
        for p in ["/etc/shadow", "sys/../etc/shadow", "", "sys//x", "./sys"] {
            assert!(w.file(p, 0o644, b"").is_err(), "{p}");
        }
    }
}
