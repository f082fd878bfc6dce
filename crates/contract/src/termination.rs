//! How the tools end on SIGINT, SIGTERM or SIGHUP: a thread of their own waits for the first one,
//! runs the command's clean-up (which removes what the command had not finished), prints the
//! message it returns and ends the process with `_exit(128 + signal)`, as a shell reports a
//! process the signal killed.

use std::io::Write;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Installs the handler: `clean_up` gets the signal's number and name (`"SIGINT"`, …) and returns
/// the line to print. It may leave a lock held (with `std::mem::forget`): nothing runs after it but the
/// message and `_exit`.
pub fn on_termination(
    clean_up: impl FnOnce(i32, &'static str) -> String + Send + 'static,
) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            let message = clean_up(signal, name);
            // Never `eprintln!`: it panics when stderr is gone (a supervisor that died first), and
            // a panic here would leave the clean-up's lock held and the process running.
            let _ = writeln!(std::io::stderr(), "{message}");
            // `_exit`: no at-exit hooks or C++ static destructors (ONNX Runtime's) may run while
            // another thread is still inside the library.
            signal_hook::low_level::exit(128 + signal);
        }
    });
    Ok(())
}
