//! Where the servers keep their data, and what creating a file there costs.
//!
//! ClickHouse writes every part as a directory of files (two per column), so
//! it creates thousands of files a second under load. On ext4 without a
//! journal the kernel will not reuse an inode freed in the last minute (six
//! while its inode table block is not yet written back), and it checks
//! every free inode of the group for that on each create. In a directory
//! whose group has seen many deletions (ClickHouse's own merged parts,
//! earlier runs' data) one create then costs hundreds of microseconds of
//! kernel CPU instead of tens. The report names the filesystem and that
//! cost, measured in the run, so that runs on different disks are not
//! compared blind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The filesystem a path is on, from a `/proc/mounts` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub point: String,
    pub fstype: String,
}

/// The mount that holds `path` (absolute): the longest mount point that is
/// a whole-component prefix of it. The last such line wins, as a later
/// mount over the same point hides an earlier one.
pub fn mount_of(mounts: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(point), Some(fstype)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let point = unescape(point);
        if !path.starts_with(&point) {
            continue;
        }
        if best.as_ref().is_none_or(|b| point.len() >= b.point.len()) {
            best = Some(Mount {
                device: device.to_owned(),
                point,
                fstype: fstype.to_owned(),
            });
        }
    }
    best
}

/// `ext4` or `ext4, no journal`: an ext4 filesystem has a journal when the
/// kernel lists its `device` (the name under `/dev` once links are
/// followed: `dm-0` for an LVM volume) under `/proc/fs/jbd2`, as
/// `<device>-8`. `journals` is `None` when that list cannot be read.
fn describe(mount: &Mount, device: &str, journals: Option<&[String]>) -> String {
    if mount.fstype != "ext4" {
        return mount.fstype.clone();
    }
    match journals {
        Some(journals)
            if !journals
                .iter()
                .any(|j| j.starts_with(&format!("{device}-"))) =>
        {
            "ext4, no journal".to_owned()
        }
        _ => "ext4".to_owned(),
    }
}

/// A `/proc/mounts` field: space, tab, newline and backslash come escaped
/// as a backslash and three octal digits (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| digits.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(
                    digits
                        .iter()
                        .fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')),
                );
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory the servers' data goes to (the test harness makes its
/// temporary directories there: `TMPDIR`, else `/tmp`), and its filesystem.
pub fn data_dir() -> (PathBuf, String) {
    let dir = std::env::temp_dir();
    let dir = dir.canonicalize().unwrap_or(dir);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let journals: Option<Vec<String>> = std::fs::read_dir("/proc/fs/jbd2").ok().map(|d| {
        d.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    });
    let fs = mount_of(&mounts, &dir).map_or("?".to_owned(), |m| {
        let device = Path::new(&m.device);
        let device = device.canonicalize().unwrap_or_else(|_| device.to_owned());
        let name = device.file_name().map(|n| n.to_string_lossy().into_owned());
        describe(&m, &name.unwrap_or_default(), journals.as_deref())
    });
    (dir, fs)
}

/// The mean time to create (and close) one empty file in a new directory
/// under `parent`, over `files` of them, and that directory: it goes when
/// dropped. (Deleting its files at once would leave freshly freed inodes
/// in the group, which the kernel then skips on every create for minutes
/// on ext4 without a journal: keep it as long as the creates measured go
/// on.)
pub fn create_cost(parent: &Path, files: usize) -> std::io::Result<(Duration, tempfile::TempDir)> {
    let dir = tempfile::Builder::new()
        .prefix("tally-create-probe-")
        .tempdir_in(parent)?;
    let started = Instant::now();
    for i in 0..files {
        std::fs::File::create(dir.path().join(i.to_string()))?;
    }
    Ok((started.elapsed() / files.max(1) as u32, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime 0 0
/dev/vdb /data xfs rw 0 0
/dev/vdc /data/click\\040house ext4 rw 0 0
shm2 /dev/shm ramfs rw 0 0
";

    fn mount(path: &str) -> Mount {
        mount_of(MOUNTS, Path::new(path)).unwrap()
    }

    #[test]
    fn the_longest_mount_point_holding_the_path_wins() {
        assert_eq!(mount("/tmp/x").point, "/");
        // The later of two mounts on one point hides the earlier.
        assert_eq!(mount("/dev/shm/bench").fstype, "ramfs");
        assert_eq!(mount("/data/a").fstype, "xfs");
        assert_eq!(mount("/data/click house/b").device, "/dev/vdc");
        // A mount point is a prefix by whole components only.
        assert_eq!(mount("/database").point, "/");
        assert_eq!(mount_of("", Path::new("/tmp")), None);
    }

    #[test]
    fn octal_escapes_are_read() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("no\\04escape\\"), "no\\04escape\\");
    }

    #[test]
    fn ext4_has_a_journal_only_where_the_kernel_lists_one() {
        let root = mount("/tmp");
        assert_eq!(describe(&root, "vda", Some(&[])), "ext4, no journal");
        assert_eq!(
            describe(&root, "vda", Some(&["vdb-8".into()])),
            "ext4, no journal"
        );
        assert_eq!(
            describe(&root, "vda", Some(&["vda1-8".into()])),
            "ext4, no journal"
        );
        assert_eq!(describe(&root, "vda", Some(&["vda-8".into()])), "ext4");
        // Unknown when the kernel's list cannot be read.
        assert_eq!(describe(&root, "vda", None), "ext4");
        assert_eq!(describe(&mount("/data/x"), "vdb", Some(&[])), "xfs");
    }

    #[test]
    fn creating_files_is_timed_and_cleaned_up() {
        let parent = tempfile::tempdir().unwrap();
        let (cost, dir) = create_cost(parent.path(), 10).unwrap();
        assert!(cost > Duration::ZERO);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 10);
        drop(dir);
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
