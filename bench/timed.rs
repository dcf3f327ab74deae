//! `timed OUT COMMAND...`: runs COMMAND (stdin, stdout and stderr inherited),
//! writes "SECONDS MAX_RSS_KB" to OUT and exits with COMMAND's status.
//!
//! bench/run.sh compiles it with `rustc -O` (std only). The clock starts just
//! before the child is spawned and stops when it is reaped, so the figure is
//! the command's own wall time. Before, the benchmark took the time in bash
//! around `/usr/bin/time`, and the two extra processes (`date`, `time`) added
//! about 3-5 ms to every figure: half the budget of a timer tick at 1 M.
//! The peak RSS comes from wait4(2), as /usr/bin/time gets it; this process
//! is small, so the child's figure is its own (a child forked from Python
//! would report Python's 14 MB as its floor).

use std::io::Write;
use std::process::{Command, ExitCode};
use std::time::Instant;

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// `struct rusage` of Linux x86_64/aarch64: two timevals, then 14 longs.
#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    rest: [i64; 13],
}

extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: timed OUT COMMAND...");
        return ExitCode::from(2);
    }
    let t0 = Instant::now();
    let child = match Command::new(&args[1]).args(&args[2..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("timed: cannot run {}: {e}", args[1]);
            return ExitCode::from(127);
        }
    };
    let mut status = 0i32;
    let mut usage = Rusage {
        utime: Timeval { sec: 0, usec: 0 },
        stime: Timeval { sec: 0, usec: 0 },
        maxrss: 0,
        rest: [0; 13],
    };
    // SAFETY: plain FFI call with valid pointers to locals of the right layout.
    let r = unsafe { wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = t0.elapsed().as_secs_f64();
    if r < 0 {
        eprintln!("timed: wait4 failed: {}", std::io::Error::last_os_error());
        return ExitCode::from(1);
    }
    let written = std::fs::File::create(&args[0])
        .and_then(|mut f| writeln!(f, "{secs:.6} {}", usage.maxrss));
    if let Err(e) = written {
        eprintln!("timed: cannot write {}: {e}", args[0]);
        return ExitCode::from(1);
    }
    // WIFEXITED: the exit code; killed by a signal: 128 + signal, as a shell.
    if status & 0x7f == 0 {
        ExitCode::from(((status >> 8) & 0xff) as u8)
    } else {
        ExitCode::from(128 + (status & 0x7f) as u8)
    }
}
