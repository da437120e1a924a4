//! Progress bars for long benchmark phases (hidden when stderr is not a
//! terminal; callers then print progress lines instead).

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for a phase waiting for `len` events, or a hidden one when
/// `enabled` is false or stderr is not a terminal.
pub fn bar(enabled: bool, phase: &str, len: u64) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>8} {elapsed_precise} [{bar:30}] {pos}/{len} {wide_msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(phase.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
