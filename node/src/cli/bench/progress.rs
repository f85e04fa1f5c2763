//! What every benchmark shows while it runs: a progress bar on a terminal, plain lines when
//! the output is a file or a pipe (CI logs), and nothing that slows the measured loop — the
//! bar is advanced in steps, not per record.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// One measured phase (`produce`, `consume`, `raw disk` …).
pub struct Phase {
    name: String,
    total: u64,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Phase {
    /// Starts a phase of `total` units (records or bytes); `unit` names them.
    pub fn start(name: &str, total: u64, unit: &str) -> Phase {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let template = format!(
                "{{msg:<14}} [{{bar:36}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)"
            );
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name.to_string());
            bar
        });
        if bar.is_none() {
            eprintln!("bench: {name}: {total} {unit}…");
        }
        Phase {
            name: name.into(),
            total,
            bar,
            started: Instant::now(),
        }
    }

    /// Moves the bar to `done` units.
    pub fn at(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done.min(self.total));
        }
    }

    pub fn finish(self) {
        let took = self.started.elapsed();
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("bench: {}: done in {:.2} s", self.name, took.as_secs_f64()),
        }
    }
}
