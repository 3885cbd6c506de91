//! Progress while syncing: bars on a terminal (bytes and images overall, one line per image in
//! flight), plain log lines every few seconds elsewhere (a scheduler's log has no cursor).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

use crate::app::SyncObserver;
use crate::plan::ImagePlan;
use crate::transfer::Context;
use crate::transfer::pipeline::{ImageResult, Observer, Outcome};

/// Follows a sync; it starts showing once the plan says how many images need work.
pub struct Progress {
    terminal: bool,
    done: Arc<AtomicU64>,
    shown: Mutex<Option<Shown>>,
}

struct Shown {
    bars: Option<Bars>,
    ticker: tokio::task::JoinHandle<()>,
}

struct Bars {
    multi: MultiProgress,
    images: ProgressBar,
    active: Mutex<std::collections::HashMap<String, ProgressBar>>,
}

impl Progress {
    pub fn new(terminal: bool) -> Self {
        Progress { terminal, done: Arc::new(AtomicU64::new(0)), shown: Mutex::new(None) }
    }

    fn with_bars(&self, f: impl FnOnce(&Bars)) -> bool {
        match self.shown.lock().expect("progress lock").as_ref().and_then(|s| s.bars.as_ref()) {
            Some(b) => {
                f(b);
                true
            }
            None => false,
        }
    }
}

fn bars(ctx: Arc<Context>, images: u64) -> Shown {
    let multi = MultiProgress::new();
    // Bytes have no total: sync does not count them up front (see PlanOptions::skip_bytes).
    let bytes_bar = multi.add(ProgressBar::no_length());
    bytes_bar.set_style(
        ProgressStyle::with_template("{spinner} {binary_bytes} moved, {binary_bytes_per_sec}").expect("template"),
    );
    let images_bar = multi.add(ProgressBar::new(images));
    images_bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} images").expect("template"));
    let ticker = tokio::spawn(async move {
        loop {
            bytes_bar.set_position(ctx.stats.bytes.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Shown { bars: Some(Bars { multi, images: images_bar, active: Default::default() }), ticker }
}

fn log_lines(ctx: Arc<Context>, images: u64, done: Arc<AtomicU64>) -> Shown {
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(10));
        interval.tick().await;
        loop {
            interval.tick().await;
            tracing::info!(
                "progress: {}/{} images, {} moved",
                done.load(Ordering::Relaxed),
                images,
                HumanBytes(ctx.stats.bytes.load(Ordering::Relaxed))
            );
        }
    });
    Shown { bars: None, ticker }
}

impl SyncObserver for Progress {
    fn planned(&self, todo: usize, ctx: &Arc<Context>) {
        let shown = if self.terminal {
            bars(ctx.clone(), todo as u64)
        } else {
            log_lines(ctx.clone(), todo as u64, self.done.clone())
        };
        *self.shown.lock().expect("progress lock") = Some(shown);
    }

    fn ended(&self) {
        if let Some(s) = self.shown.lock().expect("progress lock").take() {
            s.ticker.abort();
            if let Some(b) = s.bars {
                let _ = b.multi.clear();
            }
        }
    }
}

impl Observer for Progress {
    fn started(&self, image: &ImagePlan) {
        let shown = self.with_bars(|b| {
            let bar = b.multi.add(ProgressBar::new_spinner());
            bar.set_message(format!("{:?} {}", image.mode, image.target).to_lowercase());
            bar.enable_steady_tick(Duration::from_millis(250));
            b.active.lock().expect("bars lock").insert(image.target.clone(), bar);
        });
        if !shown {
            tracing::info!(target_image = %image.target, "{} ({})", image.status, image.source);
        }
    }

    /// A failure is shown live on a terminal; in logs it is one event at the end of the run
    /// (with the image's registries and the kind of failure), not two.
    fn finished(&self, r: &ImageResult) {
        self.done.fetch_add(1, Ordering::Relaxed);
        let shown = self.with_bars(|b| {
            if let Some(bar) = b.active.lock().expect("bars lock").remove(&r.target) {
                bar.finish_and_clear();
                b.multi.remove(&bar);
            }
            b.images.inc(1);
            if let Some(e) = &r.error {
                let what = if r.outcome == Outcome::Rejected { "rejected" } else { "failed" };
                let _ = b.multi.println(format!("{what} {}: {e}", r.target));
            }
        });
        if !shown && r.error.is_none() {
            tracing::info!(target_image = %r.target, bytes = r.bytes, "{:?}", r.outcome);
        }
    }
}
