//! Logging on stderr, for terminals, cron mail and journald.
//!
//! - Level: `-q` errors only, default warnings, `-v` info (what was opened,
//!   each step), `-vv` debug, `-vvv` trace; `RUST_LOG` overrides.
//! - Under systemd (stderr is the journal stream named by `JOURNAL_STREAM`,
//!   compared by device and inode as sd_journal_stream_fd(3) documents): no
//!   timestamps (journald adds its own) and sd-daemon(3) level prefixes `<3>`
//!   error, `<4>` warning, `<6>` info, `<7>` debug/trace, so journald records
//!   the priority (`journalctl -p warning`).
//! - Otherwise env_logger's usual format, coloured only on a terminal and
//!   never when `NO_COLOR` is set.

use std::io::Write;

/// sd-daemon priority prefix of a log level.
pub fn sd_prefix(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "<3>",
        log::Level::Warn => "<4>",
        log::Level::Info => "<6>",
        log::Level::Debug | log::Level::Trace => "<7>",
    }
}

/// Parse `JOURNAL_STREAM` (`DEVICE:INODE`, decimal).
pub fn parse_journal_stream(v: &str) -> Option<(u64, u64)> {
    let (dev, ino) = v.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// True when stderr is the journal stream systemd connected us to.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    // SAFETY: fstat fills a zeroed stat struct for fd 2; we only read it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd 2 is only read by fstat; `st` is a valid out-pointer.
    let rc = unsafe { libc::fstat(libc::STDERR_FILENO, &mut st) };
    rc == 0 && st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The final error line of a failed run: always printed (whatever the log
/// level), with the `<3>` prefix when stderr is the journal.
/// A closed or full stderr is ignored (there is nowhere left to report it).
pub fn print_error(line: &str) {
    let prefix = if stderr_is_journal() {
        sd_prefix(log::Level::Error)
    } else {
        ""
    };
    let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
}

pub fn init(verbose: u8, quiet: bool) {
    let default = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let env = env_logger::Env::default().default_filter_or(default);
    let mut b = env_logger::Builder::from_env(env);
    if stderr_is_journal() {
        b.write_style(env_logger::WriteStyle::Never);
        b.format(|buf, record| writeln!(buf, "{}{}", sd_prefix(record.level()), record.args()));
    } else if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        b.write_style(env_logger::WriteStyle::Never);
    } else {
        // Auto: colour only when stderr is a terminal.
        b.write_style(env_logger::WriteStyle::Auto);
    }
    let _ = b.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(sd_prefix(log::Level::Error), "<3>");
        assert_eq!(sd_prefix(log::Level::Warn), "<4>");
        assert_eq!(sd_prefix(log::Level::Info), "<6>");
        assert_eq!(sd_prefix(log::Level::Debug), "<7>");
        assert_eq!(sd_prefix(log::Level::Trace), "<7>");
    }

    #[test]
    fn journal_stream_format() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:x"), None);
        assert_eq!(parse_journal_stream("812345"), None);
    }
}
