//! The container image (`Containerfile`, `scripts/image`) run by podman: it
//! is small and runs as a non-root user, starts on its embedded defaults
//! with a read-only root, answers `/readyz` through a published port, keeps
//! a cart in its volume across a container restart, and as PID 1 stops
//! cleanly on `podman stop` (SIGTERM).
//!
//! The image is `CART_TEST_IMAGE` (scripts/test builds it before the
//! suite, so the release build does not compete with timing tests), else
//! this test builds `cart-actor:test` with `scripts/image`.
//!
//! Containers run with `runc` (Debian package; scripts/test installs it):
//! `crun`, podman's default, refuses hosts whose cgroup v2 hierarchy holds
//! controllers beside v1 ("hybrid mode"), as this machine's does. Their
//! resource limits are this process's own, because podman's defaults
//! (1 048 576 files) are above what an unprivileged container manager may set.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::{SKU_A, cart_cookie, client, wait_until};

/// The image's ceiling: a static binary and a CA bundle.
const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

fn podman(args: &[&str]) -> Output {
    let out = Command::new("podman").args(args).output().expect(
        "podman is missing: install Debian's podman package (scripts/test does) to test the image",
    );
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn image() -> String {
    if let Ok(image) = std::env::var("CART_TEST_IMAGE") {
        return image;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(root.join("scripts/image"))
        .arg("cart-actor:test")
        .current_dir(&root)
        .status()
        .expect("scripts/image");
    assert!(status.success(), "scripts/image failed");
    "cart-actor:test".into()
}

/// Containers and the volume of one test, removed however it ends.
struct Podman {
    name: String,
    containers: Vec<String>,
}

impl Podman {
    fn new() -> Podman {
        let name = format!("cart-test-{}", std::process::id());
        podman(&["volume", "create", &name]);
        Podman { name, containers: vec![] }
    }

    /// Starts the image with the volume at /data and port 8080 published
    /// on a free loopback port; returns the storefront's base URL.
    fn run(&mut self, image: &str) -> (String, String) {
        let container = format!("{}-{}", self.name, self.containers.len());
        let volume = format!("{}:/data", self.name);
        let (files, processes) = (limit(libc::RLIMIT_NOFILE), limit(libc::RLIMIT_NPROC).min(4096));
        let files = format!("nofile={files}:{files}");
        let processes = format!("nproc={processes}:{processes}");
        podman(&[
            "run",
            "--detach",
            "--runtime",
            "runc",
            "--ulimit",
            &files,
            "--ulimit",
            &processes,
            "--name",
            &container,
            "--read-only",
            "--volume",
            &volume,
            "--publish",
            "127.0.0.1::8080",
            image,
        ]);
        self.containers.push(container.clone());
        let port = text(podman(&["port", &container, "8080/tcp"]));
        (container, format!("http://{}", port.lines().next().unwrap_or_default()))
    }
}

/// This process's hard limit of `resource`.
fn limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `l` is a valid rlimit for getrlimit to fill.
    let ok = unsafe { libc::getrlimit(resource, &mut l) } == 0;
    assert!(ok, "getrlimit");
    l.rlim_max
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("podman").args(["rm", "--force", c]).output();
        }
        let _ = Command::new("podman").args(["volume", "rm", "--force", &self.name]).output();
    }
}

async fn ready(url: &str) {
    let readyz = format!("{url}/readyz");
    wait_until("the container to be ready", Duration::from_secs(30), || async {
        matches!(client().get(&readyz).send().await, Ok(r) if r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn the_image_serves_keeps_its_carts_and_stops_cleanly() {
    let image = image();
    let facts = text(podman(&["image", "inspect", "--format", "{{.User}} {{.Size}}", &image]));
    let (user, size) = facts.split_once(' ').expect("user and size");
    assert_eq!(user, "65532:65532", "the image runs as a non-root user");
    let size: u64 = size.parse().expect("size");
    assert!(size < MAX_IMAGE_BYTES, "the image is {size} bytes");

    let mut pod = Podman::new();
    let (first, url) = pod.run(&image);
    ready(&url).await;
    let r = client()
        .post(format!("{url}/cart/"))
        .body(serde_json::json!({"sku": SKU_A, "quantity": 2}).to_string())
        .send()
        .await
        .expect("add");
    assert_eq!(r.status(), 200);
    let cookie = format!("cartid={}", cart_cookie(&r).expect("a minted cookie"));

    // SIGTERM to PID 1, then the exit code: 0 only after a clean drain.
    podman(&["stop", "--time", "30", &first]);
    let exit = text(podman(&["inspect", "--format", "{{.State.ExitCode}}", &first]));
    let logs = String::from_utf8_lossy(&podman(&["logs", &first]).stdout).into_owned();
    assert_eq!(exit, "0", "podman stop is a clean shutdown; logs:\n{logs}");

    let (_, url) = pod.run(&image);
    ready(&url).await;
    let r = client().get(format!("{url}/cart/")).header("cookie", &cookie).send().await;
    let cart: serde_json::Value = r.expect("read").json().await.expect("json");
    assert_eq!(cart["items"][0]["sku"], SKU_A, "the cart survived in the volume: {cart}");
    assert_eq!(cart["items"][0]["qty"], 2);
}
