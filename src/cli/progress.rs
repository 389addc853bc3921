//! Progress bars for long work (hidden automatically when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-count progress bar with a label; returns a callback `(done, total)`.
pub fn bytes_bar(label: &str) -> (ProgressBar, impl FnMut(u64, u64)) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    let handle = bar.clone();
    (bar, move |done, total| {
        handle.set_length(total);
        handle.set_position(done);
    })
}
