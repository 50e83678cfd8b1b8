//! Progress bars for long work: events done, rate and ETA. Drawn on
//! stderr when it is a terminal; elsewhere (tests, CI logs) nothing is drawn
//! and the command's summary says what happened.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` events, labelled `what`.
pub fn events(what: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {human_pos}/{human_len} events  {per_sec:>14}  ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}
