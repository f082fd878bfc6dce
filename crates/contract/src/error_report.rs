//! How the binaries print the error that ends them: the error and its causes, as anyhow's `{:?}`
//! lays them out, but never a backtrace. Our messages name the problem and the fix; with
//! `RUST_BACKTRACE` set (common on development machines and some GPU images), anyhow's own report
//! would bury them under dozens of frames.

use std::error::Error;
use std::fmt::Write;
use std::process::ExitCode;

/// A binary's exit: success, or `Error: ` and the report of the error that ended it on stderr,
/// and exit status 1 (every refused input's, docs/BAD_INPUT.md).
pub fn exit_code<E: AsRef<dyn Error + Send + Sync + 'static>>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {}", error_report(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `error`, then its causes under `Caused by:` (numbered when there are several), each cause's
/// later lines indented under it.
pub fn error_report(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut causes = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    if causes.is_empty() {
        return text;
    }
    text.push_str("\n\nCaused by:");
    let numbered = causes.len() > 1;
    for (index, cause) in causes.iter().enumerate() {
        let prefix = if numbered {
            format!("{index:>5}: ")
        } else {
            "    ".to_string()
        };
        let indent = " ".repeat(prefix.len());
        for (line_number, line) in cause.lines().enumerate() {
            let lead = if line_number == 0 { &prefix } else { &indent };
            write!(text, "\n{lead}{line}").expect("writing to a String cannot fail");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer {
        message: &'static str,
        source: Option<Box<Layer>>,
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.message)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source
                .as_deref()
                .map(|layer| layer as &(dyn Error + 'static))
        }
    }

    fn layer(message: &'static str, source: Option<Layer>) -> Layer {
        Layer {
            message,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn an_error_alone_is_its_message_with_its_fix() {
        let error = layer("no engine at x\n  fix: export one", None);
        assert_eq!(error_report(&error), "no engine at x\n  fix: export one");
    }

    #[test]
    fn causes_follow_as_anyhow_lays_them_out() {
        let one = layer(
            "writing out.mp4",
            Some(layer("disk full\n  fix: free space", None)),
        );
        assert_eq!(
            error_report(&one),
            "writing out.mp4\n\nCaused by:\n    disk full\n      fix: free space"
        );
        let two = layer(
            "exporting",
            Some(layer(
                "reading a.safetensors",
                Some(layer("truncated", None)),
            )),
        );
        assert_eq!(
            error_report(&two),
            "exporting\n\nCaused by:\n    0: reading a.safetensors\n    1: truncated"
        );
    }
}
