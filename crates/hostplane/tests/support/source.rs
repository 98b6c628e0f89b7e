//! Source tarballs as `langgraph deploy --remote` uploads them, and hostile ones: the
//! members' headers are written byte by byte, so that names and kinds the `tar` crate
//! would refuse to write get through.

use flate2::write::GzEncoder;

/// One member of a tarball.
pub enum Member<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDevice(&'a str),
}

fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h
}

/// A `.tar.gz` of `members`, in order.
pub fn tarball(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for member in members {
        let (mut h, data): (tar::Header, &[u8]) = match member {
            Member::File(path, data) => (
                header(path, tar::EntryType::Regular, data.len() as u64),
                data,
            ),
            Member::Symlink(path, target) | Member::Hardlink(path, target) => {
                let kind = if matches!(member, Member::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(path, kind, 0);
                h.set_link_name(target).unwrap();
                (h, &[])
            }
            Member::CharDevice(path) => (header(path, tar::EntryType::Char, 0), &[]),
        };
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A project of `(path, contents)` files.
pub fn project(files: &[(&str, &str)]) -> Vec<u8> {
    let members: Vec<Member> = files
        .iter()
        .map(|(p, c)| Member::File(p, c.as_bytes()))
        .collect();
    tarball(&members)
}

/// The smallest valid project: one graph in one file.
pub fn minimal_project() -> Vec<u8> {
    project(&[
        (
            "langgraph.json",
            r#"{"dependencies": ["."], "graphs": {"a": "./a.py:g"}}"#,
        ),
        ("a.py", "g = None\n"),
    ])
}
