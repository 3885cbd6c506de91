//! Progress while syncing: bars on a terminal (bytes and images overall, one line per image in
//! flight), plain log lines every few seconds elsewhere (a scheduler's log has no cursor).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

use crate::plan::ImagePlan;
use crate::transfer::Context;
use crate::transfer::pipeline::{ImageResult, Observer};

pub struct Progress {
    bars: Option<Bars>,
    done: Arc<AtomicU64>,
    ticker: tokio::task::JoinHandle<()>,
}

struct Bars {
    multi: MultiProgress,
    images: ProgressBar,
    active: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>>,
}

impl Progress {
    pub fn start(ctx: Arc<Context>, images: u64, terminal: bool) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        if terminal {
            let multi = MultiProgress::new();
            // Bytes have no total: sync does not count them up front (see PlanOptions::skip_bytes).
            let bytes_bar = multi.add(ProgressBar::no_length());
            bytes_bar.set_style(
                ProgressStyle::with_template("{spinner} {binary_bytes} moved, {binary_bytes_per_sec}")
                    .expect("template"),
            );
            let images_bar = multi.add(ProgressBar::new(images));
            images_bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} images").expect("template"));
            let b = bytes_bar.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    b.set_position(ctx.stats.bytes.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            Progress { bars: Some(Bars { multi, images: images_bar, active: Default::default() }), done, ticker }
        } else {
            let d = done.clone();
            let ticker = tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_secs(10));
                interval.tick().await;
                loop {
                    interval.tick().await;
                    tracing::info!(
                        "progress: {}/{} images, {} moved",
                        d.load(Ordering::Relaxed),
                        images,
                        HumanBytes(ctx.stats.bytes.load(Ordering::Relaxed))
                    );
                }
            });
            Progress { bars: None, done, ticker }
        }
    }

    pub fn finish(&self) {
        self.ticker.abort();
        if let Some(b) = &self.bars {
            let _ = b.multi.clear();
        }
    }
}

impl Observer for Progress {
    fn started(&self, image: &ImagePlan) {
        match &self.bars {
            Some(b) => {
                let bar = b.multi.add(ProgressBar::new_spinner());
                bar.set_message(format!("{:?} {}", image.mode, image.target).to_lowercase());
                bar.enable_steady_tick(Duration::from_millis(250));
                b.active.lock().expect("bars lock").insert(image.target.clone(), bar);
            }
            None => tracing::info!(target_image = %image.target, "{} ({})", image.status, image.source),
        }
    }

    fn finished(&self, r: &ImageResult) {
        self.done.fetch_add(1, Ordering::Relaxed);
        match &self.bars {
            Some(b) => {
                if let Some(bar) = b.active.lock().expect("bars lock").remove(&r.target) {
                    bar.finish_and_clear();
                    b.multi.remove(&bar);
                }
                b.images.inc(1);
                if let Some(e) = &r.error {
                    let _ = b.multi.println(format!("failed {}: {e}", r.target));
                }
            }
            None => match &r.error {
                Some(e) => tracing::warn!(target_image = %r.target, "failed: {e}"),
                None => tracing::info!(target_image = %r.target, bytes = r.bytes, "{:?}", r.outcome),
            },
        }
    }
}
