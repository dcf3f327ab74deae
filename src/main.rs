//! corescope: maintenance toolkit for the SQLite database of CoreScope.
//! Parses the command line, runs it (see the library's `app` module) and
//! exits with the code it returns (the exit codes are listed in the README).

fn main() {
    let cli = corescope::cli::parse();
    std::process::exit(corescope::app::run(&cli));
}
