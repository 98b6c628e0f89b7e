//! Unpacking an uploaded source tarball (`.tar.gz`), which is untrusted: it is written
//! only inside the folder given, and refused whole, with a reason that names the member
//! and the problem, when it holds a path that climbs out (`../`), an absolute path, a
//! symbolic or hard link (the official CLI never sends links), a device or pipe, more
//! entries than allowed, or more bytes once decompressed than allowed (a gzip bomb stops
//! at the limit, it is never decompressed whole).

use flate2::read::GzDecoder;
use std::fmt;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// How much an archive may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of all files together, once decompressed.
    pub max_bytes: u64,
    /// Entries (files and folders).
    pub max_entries: u64,
}

impl Default for Limits {
    /// 512 MiB and 100,000 entries: far above a project (the official CLI refuses to
    /// upload more than 200 MB compressed) and far below what fills a disk.
    fn default() -> Self {
        Limits {
            max_bytes: 512 * 1024 * 1024,
            max_entries: 100_000,
        }
    }
}

/// Why an archive was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A member whose path climbs out of the folder.
    Traversal(String),
    /// A member with an absolute path.
    Absolute(String),
    /// A symbolic or hard link, and where it points.
    Link {
        path: String,
        target: String,
    },
    /// A device, a pipe or another special file.
    Special(String),
    TooManyEntries(u64),
    TooLarge(u64),
    /// Not a gzip-compressed tar archive, or a broken one.
    Corrupt(String),
    /// Writing the folder failed (a problem of this machine, not of the archive).
    Io(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Traversal(p) => write!(f, "the source archive's member {p:?} climbs out of the project folder"),
            Refused::Absolute(p) => write!(f, "the source archive's member {p:?} has an absolute path"),
            Refused::Link { path, target } => write!(
                f,
                "the source archive's member {path:?} is a link (to {target:?}); source archives may not hold links"
            ),
            Refused::Special(p) => write!(f, "the source archive's member {p:?} is a device or another special file"),
            Refused::TooManyEntries(n) => write!(f, "the source archive holds more than {n} entries"),
            Refused::TooLarge(n) => write!(f, "the source archive holds more than {n} bytes once decompressed"),
            Refused::Corrupt(e) => write!(f, "the source archive is not a readable .tar.gz: {e}"),
            Refused::Io(e) => write!(f, "cannot unpack the source archive: {e}"),
        }
    }
}

impl std::error::Error for Refused {}

/// What was unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
}

/// Reads at most `cap` bytes of `inner`; one more is an error this module recognises.
struct Capped<R> {
    inner: R,
    left: u64,
}

const CAPPED: &str = "hostplane: decompressed past the limit";

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => Err(io::Error::other(CAPPED)),
        }
    }
}

/// Unpacks the gzip-compressed tar archive `gz` into `dest` (an empty folder).
pub fn unpack(gz: impl Read, dest: &Path, limits: &Limits) -> Result<Unpacked, Refused> {
    // Headers count too: 512 bytes each, plus long names; the cap bounds what is read
    // whatever the headers claim.
    let cap = limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_mul(4096))
        .saturating_add(1 << 20);
    let stream = Capped {
        inner: GzDecoder::new(gz),
        left: cap,
    };
    let mut archive = tar::Archive::new(stream);
    let read_error = |e: io::Error| {
        if e.to_string().contains(CAPPED) {
            Refused::TooLarge(limits.max_bytes)
        } else {
            Refused::Corrupt(e.to_string())
        }
    };
    let mut done = Unpacked { files: 0, bytes: 0 };
    let mut entries_seen = 0u64;
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(Refused::TooManyEntries(limits.max_entries));
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let relative = checked_path(&raw)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            return Err(Refused::Link { path: raw, target });
        }
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let Some(relative) = relative else { continue };
        let target = dest.join(&relative);
        let io = |e: io::Error| Refused::Io(format!("{}: {e}", target.display()));
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io)?;
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(Refused::Special(raw));
        }
        let size = entry.header().size().map_err(read_error)?;
        if done.bytes.saturating_add(size) > limits.max_bytes {
            return Err(Refused::TooLarge(limits.max_bytes));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        let mut file = std::fs::File::create(&target).map_err(io)?;
        let written = io::copy(&mut (&mut entry).take(size), &mut file).map_err(read_error)?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .map_err(io)?;
        }
        done.files += 1;
        done.bytes += written;
    }
    Ok(done)
}

/// The member's path below the folder, `None` for the folder itself (`./`).
fn checked_path(raw: &str) -> Result<Option<PathBuf>, Refused> {
    let mut out = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refused::Traversal(raw.to_owned())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refused::Absolute(raw.to_owned()))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    /// A tar header for `path` written as raw bytes, so that hostile names get through.
    fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    fn archive(members: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (h, data) in members {
            b.append(h, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn file(path: &str, data: &[u8]) -> (tar::Header, Vec<u8>) {
        (
            header(path, tar::EntryType::Regular, data.len() as u64),
            data.to_vec(),
        )
    }

    /// A folder to unpack into, inside a parent whose other contents must stay empty.
    fn dest() -> (PathBuf, PathBuf) {
        let parent = std::env::temp_dir().join(format!("hp-archive-{}", rand_id()));
        let dest = parent.join("project");
        std::fs::create_dir_all(&dest).unwrap();
        (parent, dest)
    }

    fn rand_id() -> String {
        use std::time::{SystemTime, UNIX_EPOCH};
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{t}-{:?}", std::thread::current().id()).replace(['(', ')'], "")
    }

    /// Refused with `want`, and nothing written beside the folder.
    fn refused(gz: Vec<u8>, limits: Limits, want: Refused) {
        let (parent, dest) = dest();
        assert_eq!(unpack(gz.as_slice(), &dest, &limits), Err(want));
        let beside: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("project")]);
        std::fs::remove_dir_all(parent).unwrap();
    }

    #[test]
    fn a_project_unpacks_in_its_folder() {
        let (parent, dest) = dest();
        let gz = archive(&[
            file("langgraph.json", b"{}"),
            file("./agent/graph.py", b"graph = 1\n"),
            (
                header("agent/sub/", tar::EntryType::Directory, 0),
                Vec::new(),
            ),
        ]);
        let done = unpack(gz.as_slice(), &dest, &Limits::default()).unwrap();
        assert_eq!(
            done,
            Unpacked {
                files: 2,
                bytes: 12
            }
        );
        assert_eq!(
            std::fs::read(dest.join("agent/graph.py")).unwrap(),
            b"graph = 1\n"
        );
        assert!(dest.join("agent/sub").is_dir());
        std::fs::remove_dir_all(parent).unwrap();
    }

    #[test]
    fn hostile_members_are_refused_by_name() {
        let l = Limits::default();
        refused(
            archive(&[file("ok.txt", b"x"), file("a/../../evil", b"x")]),
            l,
            Refused::Traversal("a/../../evil".into()),
        );
        refused(
            archive(&[file("/tmp/evil", b"x")]),
            l,
            Refused::Absolute("/tmp/evil".into()),
        );
        let mut link = header("link", tar::EntryType::Symlink, 0);
        link.set_link_name("../../etc").unwrap();
        link.set_cksum();
        refused(
            archive(&[(link, Vec::new())]),
            l,
            Refused::Link {
                path: "link".into(),
                target: "../../etc".into(),
            },
        );
        let mut hard = header("hard", tar::EntryType::Link, 0);
        hard.set_link_name("/etc/passwd").unwrap();
        hard.set_cksum();
        refused(
            archive(&[(hard, Vec::new())]),
            l,
            Refused::Link {
                path: "hard".into(),
                target: "/etc/passwd".into(),
            },
        );
        refused(
            archive(&[(header("dev", tar::EntryType::Char, 0), Vec::new())]),
            l,
            Refused::Special("dev".into()),
        );
        refused(
            b"not gzip at all".to_vec(),
            l,
            Refused::Corrupt("invalid gzip header".into()),
        );
    }

    #[test]
    fn too_many_entries_are_refused() {
        let members: Vec<_> = (0..101).map(|i| file(&format!("f{i}"), b"")).collect();
        let limits = Limits {
            max_entries: 100,
            ..Limits::default()
        };
        refused(archive(&members), limits, Refused::TooManyEntries(100));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to about 64 KiB; the limit is 1 MiB.
        let size = 64 << 20;
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        b.append(
            &header("zeros", tar::EntryType::Regular, size),
            io::repeat(0).take(size),
        )
        .unwrap();
        let gz = b.into_inner().unwrap().finish().unwrap();
        assert!(gz.len() < 1 << 20, "the bomb is {} bytes", gz.len());
        let limits = Limits {
            max_bytes: 1 << 20,
            ..Limits::default()
        };
        refused(gz, limits, Refused::TooLarge(1 << 20));
        // A header that understates nothing but many small files add up the same way.
        let members: Vec<_> = (0..3)
            .map(|i| file(&format!("f{i}"), &[1u8; 600 * 1024]))
            .collect();
        refused(archive(&members), limits, Refused::TooLarge(1 << 20));
    }
}
