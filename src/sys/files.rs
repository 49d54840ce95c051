//! The root-safe file operations that state, page, metrics and log share:
//! whole-file replacement and opens that never follow a link another account
//! planted, and the owner and mode checks that decide what root may trust.
//! Knows nothing of what the files hold.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use tempfile::NamedTempFile;

/// Replaces `path` with `contents` in one step, with permissions `mode`: a
/// reader sees the old file or the new one, never a mix, even if this
/// process is killed midway. Safe in a directory other accounts can write
/// (a web root, a metrics directory): no link planted there is followed.
/// A failed write leaves no temporary file behind.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let directory = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let written = (|| -> Result<()> {
        check_links_on_the_way(directory)?;
        let mut file = create_temporary(directory, &name.to_string_lossy())?;
        // On the descriptor, not by path: the path could be swapped meanwhile.
        file.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.as_file().sync_all()?;
        // rename(2) replaces whatever entry `path` is, a link included,
        // without following it. On failure the temporary is dropped, which
        // removes it.
        file.persist(path).map_err(|failed| failed.error)?;
        // Make the rename itself durable.
        File::open(directory)?.sync_all()?;
        Ok(())
    })();
    written.with_context(|| format!("cannot write {}", path.display()))
}

/// A new file `.NAME.XXXXXX.tmp` in `directory`, mode 600 until the caller
/// sets its own. Created with O_CREAT|O_EXCL under a random name: a name
/// that exists already, as a file or as a link (even one pointing nowhere),
/// is never opened, so there is nothing for another account to plant.
fn create_temporary(directory: &Path, name: &str) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(directory)
}

/// Opens `path` with `options`, refusing a symbolic link there (O_NOFOLLOW)
/// instead of following it, for a file another account might have linked.
pub fn open_no_follow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    if let Some(directory) = path.parent() {
        check_links_on_the_way(directory).map_err(|error| {
            io::Error::new(io::ErrorKind::PermissionDenied, format!("{error:#}"))
        })?;
    }
    // O_NONBLOCK: a FIFO planted where a file should be must not hold the
    // run for ever on its open; it is refused below instead.
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| {
            let linked = error.raw_os_error() == Some(libc::ELOOP)
                && fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink());
            // A FIFO with no reader refuses a non-blocking writer (ENXIO).
            let odd = fs::symlink_metadata(path)
                .is_ok_and(|meta| !meta.file_type().is_file() && !meta.file_type().is_symlink());
            if odd {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is not a regular file (a FIFO, a socket or a device?): remove it",
                )
            } else if linked {
                io::Error::new(
                    error.kind(),
                    "it is a symbolic link, which portlocker never follows: remove it",
                )
            } else {
                error
            }
        })?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file (a FIFO, a socket or a device?): remove it",
        ));
    }
    Ok(file)
}

/// Refuses a symbolic link along `directory` that another account owns:
/// whoever could plant it could make root write where they choose. Links
/// root made (an admin's `/var/www` → `/srv/www`) are fine.
pub fn check_links_on_the_way(directory: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = fs::metadata("/proc/self").map_or(0, |meta| meta.uid());
    let mut walked = std::path::PathBuf::new();
    for component in directory.components() {
        walked.push(component);
        let Ok(meta) = fs::symlink_metadata(&walked) else {
            // Missing: nothing to follow; the write will say so.
            return Ok(());
        };
        if meta.file_type().is_symlink() && meta.uid() != 0 && meta.uid() != me {
            anyhow::bail!(
                "{} is a symbolic link owned by uid {}: portlocker, as root, never writes through \
                 another account's link (make it a directory, or a link root owns)",
                walked.display(),
                meta.uid()
            );
        }
    }
    Ok(())
}

/// Reads the text file at `path`, refusing a symbolic link there.
pub fn read_no_follow(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open_no_follow(path, OpenOptions::new().read(true))?.read_to_string(&mut text)?;
    Ok(text)
}

/// Refuses a file that someone other than root could change, as sshd and
/// cron do: whoever can edit the config can open every port. A link at
/// `path` is followed, and its target checked.
pub fn check_trusted(path: &Path, what: &str) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    check_owner_and_mode(path, &meta, what)
}

/// Refuses a directory that someone other than root could change, or any
/// regular file in it that someone else could, or a symbolic link in it:
/// whoever can write portlocker's state can choose the control file it
/// falls back on. The directory's ancestors are not checked.
pub fn check_trusted_dir(dir: &Path, what: &str) -> Result<()> {
    check_trusted(dir, what)?;
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot read {what} {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {what} {}", dir.display()))?
            .path();
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("{what} {}", path.display()))?;
        let shown = path.display();
        if meta.file_type().is_symlink() {
            bail!(
                "{what} holds a symbolic link {shown}, and portlocker never follows links there: \
                 remove it with `rm {shown}`"
            );
        }
        if meta.is_file() {
            check_owner_and_mode(&path, &meta, &format!("{what} file"))?;
        }
    }
    Ok(())
}

fn check_owner_and_mode(path: &Path, meta: &fs::Metadata, what: &str) -> Result<()> {
    let shown = path.display();
    ensure!(
        meta.uid() == 0,
        "{what} {shown} is owned by uid {}, not root: fix with `chown root {shown}`",
        meta.uid()
    );
    ensure!(
        meta.mode() & 0o022 == 0,
        "{what} {shown} is writable by group or others (mode {:o}): fix with `chmod go-w {shown}`",
        meta.mode() & 0o777
    );
    Ok(())
}

/// Whether this process runs as root (uid 0, also inside a user namespace).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, symlink};

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A file someone else owns, that a followed link would overwrite.
    fn victim(dir: &Path) -> std::path::PathBuf {
        let victim = dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        victim
    }

    #[test]
    fn atomic_write_replaces_whole_file_with_its_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.html");
        write_atomic(&path, b"old", 0o600).unwrap();
        write_atomic(&path, b"new page", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new page");
        assert_eq!(names_in(dir.path()), ["status.html"]);
        assert_eq!(mode_of(&path), 0o644);
        write_atomic(&path, b"secret", 0o640).unwrap();
        assert_eq!(mode_of(&path), 0o640);
    }

    #[test]
    fn a_link_at_the_old_fixed_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        let planted = dir.path().join(".status.html.tmp");
        symlink(&victim, &planted).unwrap();
        let path = dir.path().join("status.html");
        write_atomic(&path, b"page", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(mode_of(&victim), 0o600);
        assert_eq!(fs::read_link(&planted).unwrap(), victim);
        assert_eq!(fs::read(&path).unwrap(), b"page");
        assert_eq!(
            names_in(dir.path()),
            [".status.html.tmp", "status.html", "victim"]
        );
    }

    #[test]
    fn a_link_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        let path = dir.path().join("status.html");
        symlink(&victim, &path).unwrap();
        write_atomic(&path, b"page", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(mode_of(&victim), 0o600);
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(fs::read(&path).unwrap(), b"page");
    }

    #[test]
    fn temporary_names_are_new_each_time_and_never_the_fixed_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = create_temporary(dir.path(), "status.html").unwrap();
        let second = create_temporary(dir.path(), "status.html").unwrap();
        assert_ne!(first.path(), second.path());
        for temporary in [&first, &second] {
            let name = temporary.path().file_name().unwrap().to_string_lossy();
            assert!(
                name.starts_with(".status.html.") && name.ends_with(".tmp"),
                "{name}"
            );
            assert_ne!(name, ".status.html.tmp");
            assert_eq!(mode_of(temporary.path()), 0o600);
        }
    }

    #[test]
    fn a_failed_write_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory where the file should go: the rename fails.
        let path = dir.path().join("status.html");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "").unwrap();
        let error = write_atomic(&path, b"page", 0o644).unwrap_err();
        assert!(format!("{error:#}").contains("cannot write"), "{error:#}");
        assert_eq!(names_in(dir.path()), ["status.html"]);
    }

    #[test]
    fn atomic_write_into_a_missing_directory_fails_and_says_where() {
        let error = write_atomic(Path::new("/nonexistent-dir/x.html"), b"x", 0o644).unwrap_err();
        assert!(format!("{error:#}").contains("/nonexistent-dir/x.html"));
    }

    #[test]
    fn open_no_follow_refuses_a_link_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        let link = dir.path().join("portlocker.log");
        symlink(&victim, &link).unwrap();
        let error = open_no_follow(&link, OpenOptions::new().append(true).create(true))
            .unwrap_err()
            .to_string();
        assert!(error.contains("symbolic link"), "{error}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        let plain = dir.path().join("plain.log");
        open_no_follow(&plain, OpenOptions::new().append(true).create(true)).unwrap();
        assert!(plain.is_file());
    }

    #[test]
    fn a_trusted_dir_is_root_owned_and_so_are_its_files() {
        if !is_root() {
            // Files a non-root test creates are never root's. Past libtest's capture:
            let _ = writeln!(io::stderr(), "SKIPPED files::tests trusted dir: not root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shown = dir.path().display().to_string();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.path().join("state.toml");
        fs::write(&file, "").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        check_trusted_dir(dir.path(), "state_dir").unwrap();

        fs::set_permissions(&file, fs::Permissions::from_mode(0o620)).unwrap();
        let error = check_trusted_dir(dir.path(), "state_dir")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("state_dir file {shown}/state.toml is writable by group or others (mode 620): fix with `chmod go-w {shown}/state.toml`")),
            "{error}"
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        chown(&file, Some(65534), None).unwrap();
        let error = check_trusted_dir(dir.path(), "state_dir")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("fix with `chown root {shown}/state.toml`")),
            "{error}"
        );
        fs::remove_file(&file).unwrap();

        symlink("/etc/passwd", &file).unwrap();
        let error = check_trusted_dir(dir.path(), "state_dir")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("symbolic link {shown}/state.toml")),
            "{error}"
        );
        fs::remove_file(&file).unwrap();

        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let error = check_trusted_dir(dir.path(), "state_dir")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("fix with `chmod go-w {shown}`")),
            "{error}"
        );
    }
}
