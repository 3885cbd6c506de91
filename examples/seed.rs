//! Seeds a local registry with the benchmark's AKS-shaped image set (a stand-in for MCR), for
//! the README's demo and for trying `mirror sync` by hand:
//!
//! ```text
//! cargo run --release --example seed -- --registry http://127.0.0.1:5101 --scale 0.05 [--windows]
//! ```
//!
//! The registry must accept anonymous pushes (a plain `docker-registry`). Prints every image
//! reference (as `mcr.microsoft.com/...:tag`, ready for a config's `images:`) and the bytes pushed.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../benches/fixture.rs"]
#[allow(dead_code)] // shared with benches/sync.rs
mod fixture;

fn usage() -> ! {
    eprintln!("usage: seed --registry http://127.0.0.1:PORT [--scale 0.05] [--windows]");
    std::process::exit(1);
}

#[tokio::main]
async fn main() {
    let mut registry = None;
    let mut scale = 0.05;
    let mut windows = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--registry" => registry = Some(args.next().unwrap_or_else(|| usage())),
            "--scale" => scale = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage()),
            "--windows" => windows = true,
            _ => usage(),
        }
    }
    let Some(registry) = registry else { usage() };
    let f = fixture::Fixture::aks(scale, windows);
    let seeded = fixture::seed(&f, &registry).await;
    for (repo, tag, digest) in &seeded.images {
        println!("{}/{repo}:{tag}  {digest}", fixture::SOURCE_HOST);
    }
    let (linux, all) = seeded.blob_bytes();
    eprintln!(
        "seeded {} images in {} repositories into {registry}: {:.1} MiB of blobs ({:.1} MiB for linux) in {:.1} s",
        seeded.images.len(),
        f.repositories().len(),
        all as f64 / 1048576.0,
        linux as f64 / 1048576.0,
        seeded.seconds
    );
}
