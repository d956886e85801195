//! The one parser of a torch wheel's `torch/version.py`, shared by `build.rs` (which records the
//! version lipctl is built against) and `doctor` (which reads the version of the libtorch a
//! process loaded). `build.rs` includes this file with `#[path]`, so it may use `std` only.

/// The version in a torch wheel's `version.py` (`__version__ = '2.11.0+cu130'`, either quote);
/// `None` when no line assigns `__version__`.
pub fn wheel_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
}

#[cfg(test)]
mod tests {
    use super::wheel_version;

    #[test]
    fn wheel_version_reads_either_quote() {
        assert_eq!(wheel_version("from typing import Optional\n__version__ = '2.11.0+cu130'\ngit_version = 'x'\n").as_deref(), Some("2.11.0+cu130"));
        assert_eq!(wheel_version("__version__ = \"2.11.0\"").as_deref(), Some("2.11.0"));
        assert_eq!(wheel_version("version = '2.11.0'"), None);
    }
}
