//! The real programs the tests drive, found on `PATH` or in the sbin directories (where
//! Debian puts daemons such as `freeradius`). A test that needs a missing peer fails and
//! names the Debian package, rather than passing without having run.

use std::path::PathBuf;

/// Where to look besides `PATH`: a test run by a user whose `PATH` lacks sbin still
/// finds `freeradius`, `nft` and `ip`.
const SBIN: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// The path of `program`, if it is installed.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The path of `program`; fails the test naming `package` when it is not installed.
pub fn require(program: &str, package: &str) -> PathBuf {
    require_any(&[program], package)
}

/// The first of `programs` that is installed (one peer known by several names, such as
/// `freeradius` on Debian and `radiusd` elsewhere); fails the test naming `package`.
pub fn require_any(programs: &[&str], package: &str) -> PathBuf {
    programs
        .iter()
        .find_map(|p| find(p))
        .unwrap_or_else(|| panic!("{}", missing(programs, package)))
}

fn missing(programs: &[&str], package: &str) -> String {
    format!(
        "{} not found on PATH or in {}: install the Debian package {package} \
         (.ci/run installs every package the tests need)",
        programs.join(" / "),
        SBIN.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_program_is_found() {
        // `sh` is on every machine that can run these tests.
        assert!(require("sh", "dash").is_file());
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let err = std::panic::catch_unwind(|| require("outpost-no-such-peer", "outpost-pkg"))
            .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("install the Debian package outpost-pkg"),
            "{msg}"
        );
        assert!(msg.starts_with("outpost-no-such-peer not found"), "{msg}");
    }
}
