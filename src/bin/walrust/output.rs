//! Standard output for the subcommands. A reader that goes away (`walrust list URL | head`) ends
//! the command quietly with exit 0, as `head` asked for no more, instead of a panic.

use std::io::{ErrorKind, Write};

use crate::Failure;

/// Writes `text` to stdout as is; a closed pipe stops the command without a message.
pub fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(Failure {
            code: 0,
            message: String::new(),
            malformed: false,
        }),
        Err(e) => Err(Failure::new(
            1,
            format!("walrust: cannot write to standard output: {e}; check where the output goes"),
        )),
    }
}

/// `print` with a newline.
pub fn line(text: &str) -> Result<(), Failure> {
    print(&format!("{text}\n"))
}
